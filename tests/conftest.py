"""Shared factories: a real tool server on a real port, requests, process-leak checks."""

from __future__ import annotations

import importlib
import os
import tempfile
import shutil
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator

import pytest

from perfbox.api.v1 import tools_pb2 as pb
from perfbox.client import ToolClient, make_request
from perfbox.sandbox.bwrap import SANDBOX_UID_BASE
from perfbox.sandbox.config import ServerConfig
from perfbox.sandbox.server import ToolServer, create_server

SAMPLE_CU = """
__global__ void scale(float* x, float a, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) x[i] = a * x[i];
}
"""

TRITON_KERNEL = """
import triton
import triton.language as tl


@triton.jit
def copy_kernel(src_ptr, dst_ptr, n, BLOCK: tl.constexpr = 128):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(dst_ptr + offs, tl.load(src_ptr + offs, mask=mask), mask=mask)
"""


def required_module(module: str, require_env: str) -> ModuleType:
    """The module; skips without it, or fails when $require_env is set: .ci/run sets one for
    every optional dependency it installs, so a broken install fails CI instead of skipping."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        if os.environ.get(require_env):
            pytest.fail(f"{require_env} is set but {module} does not import: {e}")
        pytest.skip(f"{module} is not installed ({e}); set {require_env} to make this a failure",
                    allow_module_level=True)


def has_bwrap() -> bool:
    return shutil.which("bwrap") is not None


# without bubblewrap: skipped, unless $PERFBOX_REQUIRE_BWRAP (CI) makes them run and fail
requires_bwrap = pytest.mark.skipif(
    not has_bwrap() and not os.environ.get("PERFBOX_REQUIRE_BWRAP"),
    reason="bubblewrap is not installed")


def cuda_request(source: str = SAMPLE_CU, tool: str = "compile", **kw: object) -> pb.ToolRequest:
    return make_request(tool, {"k.cu": source}, **kw)  # type: ignore[arg-type]


def triton_request(source: str = TRITON_KERNEL, tool: str = "compile", **kw: object
                   ) -> pb.ToolRequest:
    return make_request(tool, {"kernel.py": source}, **kw)  # type: ignore[arg-type]


def start_server(tmp_path: Path, **overrides: object) -> tuple[ToolServer, int]:
    config = ServerConfig(address="127.0.0.1:0", workers=2, cache_dir=tmp_path / "cache",
                          grace_s=5)
    for key, value in overrides.items():
        setattr(config, key, value)
    return create_server(config)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ToolServer, int]]:
    """One bwrap-backed server for the session (its own cache directory)."""
    if not has_bwrap() and not os.environ.get("PERFBOX_REQUIRE_BWRAP"):
        pytest.skip("bubblewrap is not installed")
    os.environ["PERFBOX_TEST_SECRET"] = "s3cr3t-token-of-the-server"
    srv, port = start_server(tmp_path_factory.mktemp("server"))
    yield srv, port
    srv.stop(grace_s=5)


DOCKER_SANDBOX_UID = 65534  # the docker backend's job user (docker_backend.SANDBOX_USER)
TEST_IMAGE = "localhost/perfbox-test-base:1"


_podman: dict[str, object] = {}


def docker_url() -> str:
    """A Docker API endpoint for the docker-backend tests: $PERFBOX_DOCKER_URL, or podman's
    service started for this test run (podman with runc from Debian serves the Docker API on a
    socket). Skips when there is none, unless $PERFBOX_REQUIRE_DOCKER is set (CI): then it fails.

    The socket lives in a directory of this run's own and the service is stopped when the run
    ends: a socket left by an earlier run (whose service died with its session) answers
    "connection refused", and reusing it failed every docker test."""
    url = os.environ.get("PERFBOX_DOCKER_URL", "")
    if not url and shutil.which("podman"):
        url = _podman_service()
    try:
        from perfbox.sandbox.docker_backend import connect

        client = connect(url)
    except Exception as e:
        if os.environ.get("PERFBOX_REQUIRE_DOCKER"):
            raise RuntimeError(f"{e}\npodman's log: {_podman_log()}") from e
        pytest.skip(f"no Docker API for the docker backend: {e}")
    _ensure_test_image(client)
    return url


def _podman_service() -> str:
    """Start `podman system service` once per test run; stop it at exit."""
    import atexit
    import subprocess

    if "url" in _podman:
        return str(_podman["url"])
    run_dir = Path(tempfile.mkdtemp(prefix="perfbox-podman-"))
    sock, log = run_dir / "api.sock", run_dir / "service.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{sock}"],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    _podman.update(url=f"unix://{sock}", log=log)

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(run_dir, ignore_errors=True)

    atexit.register(stop)
    deadline = time.monotonic() + 15
    while not sock.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # connect() below reports a service that never came up
    return str(_podman["url"])


def _podman_log() -> str:
    log = _podman.get("log")
    if not isinstance(log, Path) or not log.exists():
        return "(podman's service was not started by the tests)"
    return log.read_text(errors="replace")[-2000:] or "(empty)"


def _ensure_test_image(client: object) -> None:
    """An image with nothing but mount points: the jobs run this host's Python and toolkit,
    bound read-only (DockerSettings.bind_host), as the bwrap backend does. Images cannot be
    pulled here, so it is imported from a tarball."""
    import io
    import subprocess
    import tarfile

    try:
        client.images.get(TEST_IMAGE)  # type: ignore[attr-defined]
        return
    except Exception:
        pass
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        for name in ("tmp", "proc", "dev", "etc", "run", "sys"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if name == "tmp" else 0o755
            tar.addfile(info)
    subprocess.run(["podman", "import", "-", TEST_IMAGE], input=data.getvalue(), check=True,
                   capture_output=True)


def start_docker_server(tmp_path: Path, **overrides: object) -> tuple[ToolServer, int]:
    from perfbox.sandbox.docker_backend import DockerSettings

    return start_server(tmp_path, backend="docker", docker=DockerSettings(
        url=docker_url(), image=TEST_IMAGE, bind_host=True), **overrides)


@pytest.fixture(scope="session")
def docker_server(tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[tuple[ToolServer, int]]:
    """One docker-backed server for the session (podman's Docker API, the test image)."""
    os.environ["PERFBOX_TEST_SECRET"] = "s3cr3t-token-of-the-server"
    srv, port = start_docker_server(tmp_path_factory.mktemp("docker-server"))
    yield srv, port
    srv.stop(grace_s=5)


@pytest.fixture()
def client(server: tuple[ToolServer, int]) -> Iterator[ToolClient]:
    with ToolClient(f"127.0.0.1:{server[1]}", timeout_s=300) as c:
        yield c


def sandbox_processes() -> list[tuple[int, int, str]]:
    """(pid, uid, cmdline) of every process running as a sandbox uid."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        uid = int(status.split("Uid:")[1].split()[0])
        if SANDBOX_UID_BASE <= uid < SANDBOX_UID_BASE + 1000 or uid == DOCKER_SANDBOX_UID:
            found.append((int(entry), uid, cmdline))
    return found


def job_frame(job_id: str = "j1", source: str = "", tool: str = "compile",
              wall_ms: int = 30_000) -> Any:
    """A worker's job frame: compile one Triton module (`source`, default a small kernel)."""
    from perfbox.sandbox.limits import JobLimits
    from perfbox.sandbox.worker_protocol import JobFrame, SourceFile

    return JobFrame(job_id, tool, "triton", (SourceFile("k.py", source or TRITON_KERNEL),), {},
                    JobLimits(wall_time_ms=wall_ms))


# a Triton module that spins at import: a job that runs until it is cancelled or killed
SPIN = TRITON_KERNEL + "\nimport time\nwhile True:\n    time.sleep(0.05)\n"


def start_spinning_job(client: ToolClient, server: ToolServer, request_id: str = "",
                       wall_time_ms: int = 0) -> Any:
    """A SPIN job, seen running on the server's only busy worker: what cancellation, kills and
    full queues are tested on. Returns the call's future."""
    spin = triton_request(SPIN, request_id=request_id, no_cache=True)
    spin.limits.wall_time_ms = wall_time_ms
    future = client.stub.Run.future(spin, timeout=60)
    wait_until(lambda: len(server.scheduler.running_jobs()) == 1, what="the spinning job to run")
    return future


def wait_until(condition, timeout_s: float = 30.0, what: str = "the condition") -> None:
    """Polls condition() until it holds; fails the test after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_process(port: int, cache: Path, *extra: str):  # -> subprocess.Popen[bytes]
    """`perfbox serve` as its own process (own session, so a test can kill its whole tree)."""
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-m", "perfbox.cli", "serve", "--address",
                             f"127.0.0.1:{port}", "--workers", "2", "--preload", "",
                             "--cache-dir", str(cache), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def job_processes() -> list[tuple[int, int, str]]:
    """Sandbox processes other than the warm workers themselves."""
    return [p for p in sandbox_processes() if "perfbox.sandbox.zygote" not in p[2]]


def wait_no_job_processes(timeout_s: float = 10.0) -> list[tuple[int, int, str]]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        left = job_processes()
        if not left:
            return []
        time.sleep(0.1)
    return job_processes()


def _has_gpu() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked gpu are skipped, with the reason, on machines without a CUDA GPU."""
    if _has_gpu():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
