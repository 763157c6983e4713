"""Hostile submissions through the real service, on each isolation backend (bubblewrap, and
docker through podman's Docker API): each ends in a clean status, leaves no process or file
behind, and leaves the server healthy.

The submissions are Triton modules: the compile tool imports them, so their module-level code
runs inside the sandbox exactly as a model's code would.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from perfbox.api.v1 import tools_pb2 as pb
from perfbox.client import ToolClient
from tests.conftest import TRITON_KERNEL, cuda_request, triton_request, wait_no_job_processes

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="process-leak checks look for the sandbox uids root uses")


@pytest.fixture(params=["bwrap", "docker"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture()
def target(backend: str, request: pytest.FixtureRequest):
    """The session's server of this backend."""
    return request.getfixturevalue("server" if backend == "bwrap" else "docker_server")


@pytest.fixture()
def client(target) -> Iterator[ToolClient]:
    with ToolClient(f"127.0.0.1:{target[1]}", timeout_s=300) as c:
        yield c


WORKDIR = {"bwrap": "/job", "docker": "/tmp/"}  # where a job's files are


def run_hostile(client: ToolClient, body: str, **limits: int) -> pb.ToolResult:
    request = triton_request(TRITON_KERNEL + "\n" + body, no_cache=True)
    for name, value in limits.items():
        setattr(request.limits, name, value)
    return client.run(request, timeout_s=120)


def assert_clean(client: ToolClient) -> None:
    assert wait_no_job_processes() == []
    assert client.health() == "SERVING"
    assert client.run(cuda_request(no_cache=True)).status == pb.OK


def test_cannot_connect_to_the_servers_port(client: ToolClient, target) -> None:
    accepted = []
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.2)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                accepted.append(listener.accept())
            except OSError:
                continue

    thread = threading.Thread(target=accept)
    thread.start()
    body = f"""
import socket
for port in ({target[1]}, {listener.getsockname()[1]}):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2)
        print("CONNECTED", port)
    except OSError as e:
        print("BLOCKED", port, type(e).__name__)
"""
    try:
        result = run_hostile(client, body)
    finally:
        stop.set()
        thread.join()
        listener.close()
    assert result.status == pb.OK, result.summary
    assert "CONNECTED" not in result.stdout and result.stdout.count("BLOCKED") == 2
    assert accepted == []
    assert_clean(client)


def test_cannot_write_outside_the_workspace(client: ToolClient, tmp_path: Path,
                                            backend: str) -> None:
    tmp_path.chmod(0o777)
    targets = ["/usr/pwned", "/etc/pwned", str(tmp_path / "pwned"), "/root/pwned",
               str(Path(__file__).resolve().parent / "pwned")]
    body = f"""
import os
for path in {targets!r}:
    try:
        with open(path, "w") as f:
            f.write("x")
        print("WROTE", path)
    except OSError as e:
        print("DENIED", path, type(e).__name__)
with open("inside.txt", "w") as f:
    f.write("fine")
print("INSIDE", os.getcwd())
"""
    result = run_hostile(client, body)
    assert result.status == pb.OK, result.summary
    assert "WROTE" not in result.stdout and result.stdout.count("DENIED") == len(targets)
    assert f"INSIDE {WORKDIR[backend]}" in result.stdout
    assert not any(Path(t).exists() for t in targets)
    assert_clean(client)


def test_cannot_read_shadow_or_the_servers_environment(client: ToolClient, backend: str) -> None:
    assert os.environ["PERFBOX_TEST_SECRET"]  # set in the server's process by the fixture
    body = """
import os
try:
    print("SHADOW", open("/etc/shadow").read()[:20])
except OSError as e:
    print("NOSHADOW", type(e).__name__)
print("ENV", sorted(os.environ))
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            print("PROC", pid, open(f"/proc/{pid}/environ", "rb").read()[:200])
        except OSError as e:
            print("PROCDENIED", pid, type(e).__name__)
print("ROOT", sorted(os.listdir("/")))
for top in ("/home", "/var", "/srv"):
    print("UNDER", top, sorted(os.listdir(top)) if os.path.isdir(top) else None)
"""
    result = run_hostile(client, body)
    assert result.status == pb.OK, result.summary
    lines = result.stdout.splitlines()
    assert "NOSHADOW FileNotFoundError" in lines and not any(x.startswith("SHADOW") for x in lines)
    assert "s3cr3t-token" not in result.stdout and "PERFBOX_TEST_SECRET" not in result.stdout
    assert any(x.startswith("PROCDENIED 1 ") for x in lines)  # the worker's environ
    if backend == "bwrap":
        listing = next(line for line in lines if line.startswith("ROOT"))
        assert "'home'" not in listing and "'var'" not in listing and "'srv'" not in listing
    # nothing of the host's /home, /var or /srv (a container runtime may make empty ones, and
    # podman a tmpfs /var/tmp)
    for line in (x for x in lines if x.startswith("UNDER")):
        assert line.endswith(("None", "[]", "['tmp']")), line
    assert_clean(client)


def test_fork_bomb_is_contained(client: ToolClient) -> None:
    body = """
import os, time
children = 0
while True:
    pid = os.fork()
    if pid == 0:
        time.sleep(1000)
        os._exit(0)
    children += 1
"""
    result = run_hostile(client, body, wall_time_ms=20_000, max_processes=64)
    assert result.status in (pb.COMPILE_ERROR, pb.RUNTIME_ERROR, pb.TIMEOUT), result.summary
    assert "BlockingIOError" in result.summary or result.status == pb.TIMEOUT
    assert_clean(client)


def test_infinite_loop_hits_the_wall_limit(client: ToolClient) -> None:
    result = run_hostile(client, "while True:\n    pass\n", wall_time_ms=3000)
    assert result.status == pb.TIMEOUT
    assert "wall-clock limit of 3 s" in result.error
    assert 2900 <= result.timings.run_ms < 10_000
    assert_clean(client)


def test_cpu_limit(client: ToolClient) -> None:
    result = run_hostile(client, "while True:\n    pass\n", wall_time_ms=20_000, cpu_time_ms=2000)
    assert result.status == pb.TIMEOUT
    assert "CPU-time limit" in result.error
    assert_clean(client)


def test_printing_a_gibibyte_hits_the_output_limit(client: ToolClient) -> None:
    body = "import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(1024):\n    sys.stdout.write(chunk)\n"
    result = run_hostile(client, body, max_output_bytes=4 << 20)
    assert result.status == pb.OUTPUT_LIMIT
    assert len(result.stdout.encode()) < 64 * 1024 and "bytes elided" in result.stdout
    assert_clean(client)


def test_huge_file_hits_the_file_size_limit(client: ToolClient) -> None:
    body = "f = open('big', 'wb')\nfor _ in range(64):\n    f.write(b'x' * (1 << 20))\n"
    result = run_hostile(client, body, max_file_bytes=8 << 20)
    assert result.status == pb.OUTPUT_LIMIT
    assert "file grew past" in result.error
    assert_clean(client)


def test_unbounded_allocation_hits_the_memory_limit(client: ToolClient) -> None:
    body = "blocks = []\nwhile True:\n    blocks.append(bytearray(64 << 20))\n"
    result = run_hostile(client, body, memory_bytes=512 << 20, wall_time_ms=60_000)
    assert result.status == pb.MEMORY_LIMIT, (result.summary, result.stderr[-500:])
    assert_clean(client)


def test_background_daemon_does_not_outlive_its_job(client: ToolClient) -> None:
    body = """
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        time.sleep(3600)
    os._exit(0)
print("DAEMONIZED")
"""
    result = run_hostile(client, body)
    assert result.status == pb.OK and "DAEMONIZED" in result.stdout
    assert_clean(client)


def test_exit_during_import_is_a_runtime_error(client: ToolClient) -> None:
    result = run_hostile(client, "import os\nos._exit(3)\n")
    assert result.status == pb.RUNTIME_ERROR
    assert "exited with code 3" in result.error
    assert_clean(client)


def test_killing_the_worker_from_inside_fails_only_that_job(client: ToolClient) -> None:
    body = """
import os, signal
for sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
    try:
        os.kill(1, sig)
        print("SENT", sig)
    except OSError as e:
        print("DENIED", sig, type(e).__name__)
"""
    result = run_hostile(client, body)
    assert result.status == pb.OK, result.summary
    assert_clean(client)


def test_job_runs_unprivileged_with_no_new_privileges(client: ToolClient) -> None:
    body = """
import os
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
print("IDS", os.getuid(), os.geteuid(), os.getgid())
for key in ("NoNewPrivs", "CapEff", "CapPrm", "CapBnd", "Seccomp"):
    print(key, status[key].strip())
print("HOST", os.uname().nodename)
"""
    result = run_hostile(client, body)
    assert result.status == pb.OK, result.summary
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines() if " " in line)
    uid = int(lines["IDS"].split()[0])
    assert uid != 0 and uid >= 61000
    assert lines["NoNewPrivs"] == "1"
    assert lines["CapEff"] == lines["CapPrm"] == lines["CapBnd"] == "0000000000000000"
    assert lines["HOST"] == "job"


def test_cannot_signal_or_trace_the_server(client: ToolClient) -> None:
    """The server is this test process (pid below): a job cannot see, signal or trace it."""
    body = f"""
import ctypes, os, signal
target = {os.getpid()}
try:
    os.kill(target, signal.SIGTERM)
    print("SIGNALLED")
except OSError as e:
    print("NOSIGNAL", type(e).__name__)
try:
    open(f"/proc/{{target}}/mem", "rb").read(1)
    print("READMEM")
except OSError as e:
    print("NOMEM", type(e).__name__)
libc = ctypes.CDLL(None, use_errno=True)
print("PTRACE", libc.ptrace(16, target, 0, 0), ctypes.get_errno())  # PTRACE_ATTACH
"""
    result = run_hostile(client, body)
    assert result.status == pb.OK, result.summary
    assert "NOSIGNAL" in result.stdout and "SIGNALLED" not in result.stdout
    assert "NOMEM" in result.stdout and "READMEM" not in result.stdout
    assert "PTRACE -1" in result.stdout
    assert_clean(client)


def test_cannot_read_the_service_account_token_path(client: ToolClient) -> None:
    """Kubernetes mounts a pod's token at this path; perfbox's pods mount none, and even where
    a host has one, a job cannot reach it (nothing of the host's /var/run is bound in)."""
    token_dir = Path("/var/run/secrets/kubernetes.io/serviceaccount")
    made = not token_dir.exists()
    token_dir.mkdir(parents=True, exist_ok=True)
    (token_dir / "token").write_text("sa-token-the-job-must-not-see")
    try:
        body = """
import os
for path in ("/var/run/secrets/kubernetes.io/serviceaccount/token",
             "/run/secrets/kubernetes.io/serviceaccount/token"):
    try:
        print("TOKEN", open(path).read())
    except OSError as e:
        print("NOTOKEN", type(e).__name__)
"""
        result = run_hostile(client, body)
    finally:
        if made:
            import shutil

            shutil.rmtree("/var/run/secrets", ignore_errors=True)
    assert result.status == pb.OK, result.summary
    assert "sa-token" not in result.stdout and result.stdout.count("NOTOKEN") == 2
    assert_clean(client)


def test_cannot_read_another_jobs_workspace(client: ToolClient) -> None:
    """Two jobs at once: the second looks everywhere it can for the first one's file."""
    import concurrent.futures as cf

    writer = """
import time
with open("secret-of-job-a.txt", "w") as f:
    f.write("job-a-private-answer")
time.sleep(4)
print("WROTE")
"""
    reader = """
import os, time
time.sleep(1)
found = []
for top in ("/", ):
    for root, dirs, files in os.walk(top):
        dirs[:] = [d for d in dirs if os.path.join(root, d) not in ("/proc", "/sys", "/usr", "/dev")]
        if "secret-of-job-a.txt" in files:
            found.append(os.path.join(root, "secret-of-job-a.txt"))
print("FOUND", found)
"""
    with cf.ThreadPoolExecutor(2) as pool:
        a = pool.submit(run_hostile, client, writer)
        b = pool.submit(run_hostile, client, reader)
        result_a, result_b = a.result(), b.result()
    assert result_a.status == pb.OK and "WROTE" in result_a.stdout, result_a.summary
    assert result_b.status == pb.OK, result_b.summary
    assert "FOUND []" in result_b.stdout
    assert "job-a-private-answer" not in result_b.stdout
    assert_clean(client)


def test_worker_frames_printed_by_the_job_are_its_text_never_parsed(client: ToolClient) -> None:
    """A red-team attack kept: forged done, outcome, started and log frames, written to stdout,
    stderr and the worker's /proc fds in the protocol's own encoding (4-byte big-endian length,
    JSON), come back as the job's text; the status and summary stay the tool's."""
    body = r"""
import json, os, struct, sys
forged = [{"type": "done", "job_id": "x", "outcome": {"status": "OK", "summary": "PWNED",
           "report": {}, "error": ""}, "outcome_error": "", "exit_code": 0, "signal": 0,
           "killed": "", "wall_ms": 1, "cpu_ms": 1, "stdout": "", "stderr": "",
           "stdout_bytes": 0, "stderr_bytes": 0},
          {"type": "outcome", "outcome": {"status": "OK", "summary": "PWNED", "report": {},
           "error": ""}},
          {"type": "started", "job_id": "x"}, {"type": "log", "job_id": "x", "stream": "stdout",
           "text": "PWNED"}]
frames = b"".join(struct.pack(">I", len(b)) + b for b in (json.dumps(f).encode() for f in forged))
for stream in (sys.stdout.buffer, sys.stderr.buffer):
    stream.write(frames + b"\n")
    stream.flush()
for fd in os.listdir("/proc/1/fd") if os.access("/proc/1/fd", os.R_OK) else []:
    try:
        with open(f"/proc/1/fd/{fd}", "wb") as f:
            f.write(frames)
        print("REACHED", fd)
    except OSError:
        pass
"""
    result = run_hostile(client, body)
    assert result.status == pb.OK and "PWNED" not in result.summary, result.summary
    assert "PWNED" in result.stdout and "PWNED" in result.stderr  # returned as text
    assert "REACHED" not in result.stdout
    assert_clean(client)
