"""`perfbox serve` as a real process: SIGTERM drains gracefully, SIGKILL leaves nothing behind."""

from __future__ import annotations

import os
import signal
from signal import SIGTERM
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from perfbox.api.v1 import tools_pb2 as pb
from perfbox.api.v1.tools_pb2_grpc import ToolServiceStub
from perfbox.client import RetryPolicy, ToolClient
from perfbox.sandbox.memory_watch import tree_pids
from tests.conftest import (TRITON_KERNEL, free_port, requires_bwrap, sandbox_processes,
                            triton_request)

pytestmark = requires_bwrap


def start_serve(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "perfbox.cli", "--log-level", "INFO", "serve",
         "--address", f"127.0.0.1:{port}", "--workers", "1", "--preload", "triton",
         "--cache-dir", str(tmp_path / "cache"), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    with ToolClient(f"127.0.0.1:{port}") as client:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if client.health(timeout_s=2) == "SERVING":
                    break
            except Exception:
                time.sleep(0.2)
    return proc, port


def descendants(pid: int) -> list[int]:
    return tree_pids(pid)[1:]  # the watchdog's own walk of /proc, less the root


def alive(pids: list[int]) -> list[int]:
    left = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            left.append(pid)
    return left


SLEEPY = TRITON_KERNEL + "\nimport time\ntime.sleep(2)\nprint('FINISHED')\n"


def test_sigterm_lets_running_jobs_finish(tmp_path: Path) -> None:
    proc, port = start_serve(tmp_path, "--grace-s", "20")
    with ToolClient(f"127.0.0.1:{port}", retry=RetryPolicy(max_attempts=2)) as client:
        result = None
        for event in client.run_stream(triton_request(SLEEPY, no_cache=True), timeout_s=60):
            if event.HasField("started"):
                proc.send_signal(SIGTERM)  # the job is running now
            if event.HasField("result"):
                result = event.result
    assert result is not None
    assert result.status == pb.OK and "FINISHED" in result.stdout
    assert proc.wait(timeout=60) == 0
    assert b"shutting down" in proc.stdout.read()


def test_sigterm_cancels_jobs_past_the_grace_period(tmp_path: Path) -> None:
    proc, port = start_serve(tmp_path, "--grace-s", "1")
    children = descendants(proc.pid)
    spin = triton_request(TRITON_KERNEL + "\nwhile True:\n    pass\n", no_cache=True)
    # a bare channel: the client SDK would wait for the server to come back and retry
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stream = ToolServiceStub(channel).RunStream(spin, timeout=60)
        with pytest.raises(grpc.RpcError) as info:
            for event in stream:
                if event.HasField("started"):
                    started = time.monotonic()
                    proc.send_signal(signal.SIGTERM)  # the job is running now
    assert proc.wait(timeout=60) == 0
    assert time.monotonic() - started < 15
    assert info.value.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)
    assert alive(children) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="checks the sandbox uids root uses")
def test_sigkill_of_the_server_kills_every_job(tmp_path: Path) -> None:
    proc, port = start_serve(tmp_path)
    spin = triton_request(TRITON_KERNEL + "\nwhile True:\n    pass\n", no_cache=True)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        future = ToolServiceStub(channel).Run.future(spin, timeout=60)
        time.sleep(2.0)
        children = descendants(proc.pid)
        assert len(children) >= 3  # bwrap, the worker, its job
        proc.kill()
        proc.wait()
        with pytest.raises(grpc.RpcError):
            future.result()
    deadline = time.monotonic() + 10
    while alive(children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert alive(children) == []
    assert not [p for p in sandbox_processes() if str(port) in p[2]]


@requires_bwrap
def test_stopping_one_server_leaves_another_in_the_same_process_serving(tmp_path: Path) -> None:
    """Each server's cgroups are its own: stopping one (which kills and removes its worker
    cgroups) must not touch another's workers. Names once came from id(self) & 0xffff, which
    two live servers could share."""
    from tests.conftest import cuda_request, start_server

    first, _ = start_server(tmp_path / "a", workers=1, preload=())
    second, port = start_server(tmp_path / "b", workers=1, preload=())
    try:
        if first.cgroups is not None and second.cgroups is not None:
            assert first.cgroups.name != second.cgroups.name
        first.stop(grace_s=1)
        with ToolClient(f"127.0.0.1:{port}", timeout_s=120) as client:
            assert client.run(cuda_request()).status == pb.OK
    finally:
        first.stop(grace_s=1)
        second.stop(grace_s=1)
