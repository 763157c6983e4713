"""Nothing a job does reaches its worker's control, and a worker that stops answering is killed
with every process of its sandbox (real servers: bubblewrap, and docker through podman where a
test says `any_client`; the job's code is a Triton module's top level, which the compile tool
imports).

Faults a job cannot cause any more are injected from the host, and say so: a SIGSTOP of the
worker stands in for a worker wedged by a bug.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from perfbox.api.v1 import tools_pb2 as pb
from perfbox.client import ToolClient
from perfbox.sandbox.limits import HEARTBEAT_TIMEOUT_S
from perfbox.sandbox.memory_watch import tree_pids
from perfbox.sandbox.server import ToolServer
from tests.conftest import TRITON_KERNEL, cuda_request, requires_bwrap, start_server, \
    triton_request

pytestmark = requires_bwrap


@pytest.fixture(scope="module", params=[True, False], ids=["cgroups", "no-cgroups"])
def one_worker(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
               ) -> Iterator[tuple[ToolServer, int]]:
    """A one-worker bwrap server, with cgroups (where the host has them) and without."""
    srv, port = start_server(tmp_path_factory.mktemp("control"), workers=1,
                             use_cgroups=request.param)
    yield srv, port
    srv.stop(grace_s=2)


@pytest.fixture()
def client(one_worker: tuple[ToolServer, int]) -> Iterator[ToolClient]:
    with ToolClient(f"127.0.0.1:{one_worker[1]}", timeout_s=120) as c:
        yield c


@pytest.fixture(params=["bwrap", "docker"])
def any_client(request: pytest.FixtureRequest) -> Iterator[ToolClient]:
    """A client of the session's server of each isolation backend."""
    target = request.getfixturevalue("server" if request.param == "bwrap" else "docker_server")
    with ToolClient(f"127.0.0.1:{target[1]}", timeout_s=300) as c:
        yield c


def zygote_pid(srv: ToolServer) -> int:
    """The host pid of the slot's worker (pid 1 of its sandbox)."""
    worker = srv.scheduler.slots[0].ensure_worker()
    assert worker.proc is not None
    for pid in tree_pids(worker.proc.pid):  # breadth first: the worker before its jobs
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        # bwrap's own command line names the zygote too: the worker is the python running it
        if b"python" in Path(argv[0].decode()).name.encode() and b"perfbox.sandbox.zygote" in argv:
            return pid
    raise AssertionError("no zygote under the worker")


def module(body: str) -> pb.ToolRequest:
    return triton_request(TRITON_KERNEL + "\n" + body, no_cache=True)


def test_the_worker_catches_no_signal(one_worker: tuple[ToolServer, int]) -> None:
    """After the warm-up imports every handler a library installed is gone: as pid 1 of its
    namespace, the worker then cannot be made to run code by any signal from a job."""
    status = Path(f"/proc/{zygote_pid(one_worker[0])}/status").read_text()
    caught = next(line for line in status.splitlines() if line.startswith("SigCgt:"))
    # but signals 32 and 33: the C library's own (thread cancellation, set*id broadcast), which
    # it cannot give up and which ignore senders other than the process itself
    glibc_reserved = (1 << 31) | (1 << 32)
    assert int(caught.split()[1], 16) & ~glibc_reserved == 0, caught


def test_signals_to_pid_1_are_refused(any_client: ToolClient) -> None:
    """pid 1 is the worker in a bubblewrap sandbox and in a container alike."""
    client = any_client
    body = """
import os, signal
for sig in (signal.SIGTERM, signal.SIGSEGV, signal.SIGUSR1, signal.SIGINT, signal.SIGKILL,
            signal.SIGSTOP):
    try:
        os.kill(1, sig)
        print("SENT", sig.name)
    except OSError as e:
        print("DENIED", sig.name, e.errno)
"""
    result = client.run(module(body))
    assert result.status == pb.OK, result.summary
    assert "SENT" not in result.stdout and result.stdout.count("DENIED") == 6, result.stdout
    assert client.run(cuda_request(no_cache=True)).status == pb.OK


def test_the_worker_survives_signals_to_pid_1(client: ToolClient,
                                              one_worker: tuple[ToolServer, int]) -> None:
    before = zygote_pid(one_worker[0])
    result = client.run(module("import os, signal\ntry:\n    os.kill(1, signal.SIGSEGV)\n"
                               "except OSError:\n    pass\n"))
    assert result.status == pb.OK, result.summary
    assert zygote_pid(one_worker[0]) == before  # the same worker, alive and serving


def test_a_job_cannot_make_namespaces_mounts_or_keys(any_client: ToolClient) -> None:
    client = any_client
    body = """
import ctypes, errno
libc = ctypes.CDLL(None, use_errno=True)
def attempt(name, *args):
    result = getattr(libc, name)(*args)
    print(name, "OK" if result >= 0 else errno.errorcode[ctypes.get_errno()])
attempt("unshare", 0x10000000)                      # CLONE_NEWUSER
attempt("unshare", 0x00020000)                      # CLONE_NEWNS
attempt("mount", b"none", b"/tmp", b"tmpfs", 0, None)
attempt("syscall", 250, 0, b"user", b"x", 0)        # keyctl (x86_64)
attempt("syscall", 321, 0, 0, 0)                    # bpf
attempt("syscall", 323, 0)                          # userfaultfd
attempt("syscall", 425, 8, 0)                       # io_uring_setup
"""
    result = client.run(module(body))
    assert result.status == pb.OK, result.summary
    lines = [line for line in result.stdout.splitlines() if line.split()[:1] and
             line.split()[0] in ("unshare", "mount", "syscall")]
    assert len(lines) == 7 and all(line.endswith("EPERM") for line in lines), result.stdout


def test_forged_result_frames_never_reach_the_caller(any_client: ToolClient) -> None:
    client = any_client
    """The module writes a forged OK outcome frame to every descriptor it has and every one
    of its parent's it can open: none is the result pipe, the parent's are closed to it, and
    the report pipe it does reach is read as its own (now unusable) report."""
    body = r"""
import json, os, struct
frame = json.dumps({"type": "outcome", "outcome": {"status": "OK", "summary": "FORGED",
                    "report": {}, "error": ""}}).encode()
frame = struct.pack(">I", len(frame)) + frame
reached = 0
for fd in range(3, 1024):
    try:
        os.write(fd, frame)
        reached += 1
    except OSError:
        pass
parent = os.getppid()
try:
    names = os.listdir(f"/proc/{parent}/fd")
except OSError as e:
    names = []
    print("PARENT FDS CLOSED", e.errno)
for name in names:
    try:
        fd = os.open(f"/proc/{parent}/fd/{name}", os.O_WRONLY)
        os.write(fd, frame)
        reached += 1
    except OSError:
        pass
print("REACHED", reached)
"""
    result = client.run(module(body))
    # the only channel it reaches is its own report pipe, which it corrupted: its own error
    assert result.status == pb.RUNTIME_ERROR, result.summary
    assert "FORGED" not in result.summary and "report is not JSON" in result.error
    assert "PARENT FDS CLOSED" in result.stdout


def test_a_module_ending_its_process_early_is_its_runtime_error(client: ToolClient) -> None:
    """A module that exits with status 0 before the compile (so that no report exists) gets
    no OK: the tool reports how the module's process ended."""
    result = client.run(module("import os\nos._exit(0)\n"))
    assert result.status == pb.RUNTIME_ERROR, result.summary
    assert "exited with code 0 before it finished" in result.error


def test_a_silent_worker_is_killed_with_its_sandbox(client: ToolClient,
                                                    one_worker: tuple[ToolServer, int]) -> None:
    """Injected fault: the host stops the worker mid-job (as a bug or the kernel might). The
    missing heartbeat fails that job within HEARTBEAT_TIMEOUT_S, every process of the sandbox
    is gone, and the slot serves the next job with a fresh worker."""
    srv = one_worker[0]
    zygote = zygote_pid(srv)
    results: list[pb.ToolResult] = []
    spinner = threading.Thread(target=lambda: results.append(client.run(
        module("while True:\n    pass\n"), timeout_s=120)))
    started = time.monotonic()
    spinner.start()
    time.sleep(2.0)  # the job is running
    sandbox = tree_pids(zygote)
    assert len(sandbox) >= 2, "the job should be running under the worker"
    os.kill(zygote, signal.SIGSTOP)
    spinner.join(timeout=HEARTBEAT_TIMEOUT_S + 30)
    elapsed = time.monotonic() - started
    assert results and results[0].status == pb.INTERNAL_ERROR, results
    assert "stopped answering" in results[0].error
    assert elapsed < HEARTBEAT_TIMEOUT_S + 15
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in sandbox):
        time.sleep(0.1)
    assert not [p for p in sandbox if Path(f"/proc/{p}").exists()]
    assert client.run(cuda_request(no_cache=True)).status == pb.OK
    assert zygote_pid(srv) != zygote


FAKE_COMPILE = r'''
import triton
class _Meta:
    num_warps, num_stages, shared = 4, 3, 0
class _Compiled:
    metadata = _Meta()
    def __init__(self, ptx):
        self.asm = {"ttir": "fake", "ttgir": "fake", "llir": "fake", "ptx": ptx,
                    "cubin": b"\x7fELFnotreally"}
PTX = """.version 8.0
.target sm_90
.address_size 64
.visible .entry ENTRY()
{
  NOT AN INSTRUCTION;
}
"""
triton.compile = lambda *a, **k: _Compiled(PTX.replace("ENTRY", "%s"))
'''


@pytest.mark.parametrize("tool", ["compile", "disasm"])
def test_a_module_substituting_the_compilers_output_is_caught(any_client: ToolClient,
                                                              tool: str) -> None:
    """Red-team finding: a module replaced triton.compile and got OK with kernels of its own
    invention (and an INTERNAL_ERROR from disasm on its fake cubin). Fake entry names are its
    RUNTIME_ERROR; PTX named after the kernel but not assembling is its COMPILE_ERROR; the
    fake cubin is never used (ptxas makes the cubin from the PTX)."""
    client = any_client
    invented = triton_request(TRITON_KERNEL + FAKE_COMPILE % "totally_fake_gemm_kernel",
                              tool=tool, no_cache=True)
    result = client.run(invented)
    assert result.status == pb.RUNTIME_ERROR, result.summary
    assert "totally_fake_gemm_kernel" in result.error
    garbage = triton_request(TRITON_KERNEL + FAKE_COMPILE % "copy_kernel", tool=tool,
                             no_cache=True)
    result = client.run(garbage)
    assert result.status == pb.COMPILE_ERROR, result.summary
    assert "ptxas rejected the PTX" in result.summary


def test_a_silent_container_worker_is_removed(tmp_path: Path) -> None:
    """The same on the docker backend: the host stops the container's worker mid-job; the
    missing heartbeat fails the job and the container is removed with all it ran."""
    from tests.conftest import start_docker_server

    srv, port = start_docker_server(tmp_path, workers=1)
    try:
        with ToolClient(f"127.0.0.1:{port}", timeout_s=120) as client:
            results: list[pb.ToolResult] = []
            spinner = threading.Thread(target=lambda: results.append(client.run(
                module("while True:\n    pass\n"), timeout_s=120)))
            spinner.start()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not srv.scheduler.running_jobs():
                time.sleep(0.1)
            time.sleep(2.0)  # the job is running in the container
            worker = srv.scheduler.slots[0].worker
            assert worker is not None and worker.container is not None
            container = worker.container
            container.reload()
            os.kill(int(container.attrs["State"]["Pid"]), signal.SIGSTOP)
            spinner.join(timeout=HEARTBEAT_TIMEOUT_S + 30)
            assert results and results[0].status == pb.INTERNAL_ERROR, results
            assert "stopped answering" in results[0].error
            left = srv.backend.docker.containers.list(all=True, filters={"id": container.id})
            assert left == []
            assert client.run(cuda_request(no_cache=True)).status == pb.OK
    finally:
        srv.stop(grace_s=2)


def test_a_report_flood_is_cut_at_its_bound(client: ToolClient) -> None:
    """The module floods every descriptor it has (its report pipe among them) with more than a
    report may hold: the tool stops reading at the bound and closes the pipe, so the call ends
    at once as the module's RUNTIME_ERROR instead of running into its wall limit."""
    body = """
import os
junk = b"x" * (4 << 20)
for fd in range(3, 1024):
    try:
        os.write(fd, junk)
    except OSError:
        pass
"""
    request = module(body)
    request.limits.wall_time_ms = 60_000
    started = time.monotonic()
    result = client.run(request)
    assert result.status == pb.RUNTIME_ERROR, result.summary
    assert "report" in result.error and time.monotonic() - started < 30


def test_memfds_are_refused_only_where_no_cgroup_counts_them(
        client: ToolClient, one_worker: tuple[ToolServer, int]) -> None:
    """The CUDA driver makes a memfd when it initialises: submitted code may make one wherever a
    cgroup charges its pages (and so on every GPU node with cgroups), and is refused one only
    where the watchdog, which cannot follow a closed one, is the bound (on a node without a
    GPU)."""
    result = client.run(module("""
import os
try:
    os.close(os.memfd_create("probe"))
    print("MADE")
except OSError as e:
    print("REFUSED", e.errno)
"""))
    assert result.status == pb.OK, result.summary
    watched = one_worker[0].cgroups is None
    assert ("REFUSED 1" if watched else "MADE") in result.stdout, result.stdout
