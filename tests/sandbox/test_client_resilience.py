"""The client a training job uses, against real servers: calls balanced over several nodes,
a node lost mid-run, and a large batch that survives the server being killed and restarted
without losing or duplicating a result."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from perfbox.api.v1 import tools_pb2 as pb
from perfbox.client import ToolClient, make_request
from tests.conftest import requires_bwrap, start_server

KERNEL = "__global__ void k{n}(float* x) {{ x[threadIdx.x] *= {n}.0f; }}\n"


def _compile(n: int, request_id: str = "") -> pb.ToolRequest:
    return make_request("compile", {f"k{n}.cu": KERNEL.format(n=n)}, archs=["sm_90"],
                        request_id=request_id)


def _rpcs(server) -> float:
    return sum(s.value for f in server.metrics.registry.collect() if f.name == "perfbox_rpcs"
               for s in f.samples if s.name.endswith("_total"))


@requires_bwrap
def test_calls_are_balanced_over_nodes_and_survive_losing_one(tmp_path: Path) -> None:
    a, port_a = start_server(tmp_path / "a", workers=1, preload=())
    b, port_b = start_server(tmp_path / "b", workers=1, preload=())
    try:
        with ToolClient(f"ipv4:127.0.0.1:{port_a},127.0.0.1:{port_b}", timeout_s=120) as c:
            c.wait_ready()
            for n in range(12):
                assert c.run(_compile(n % 3)).status == pb.OK
            assert _rpcs(a) >= 3 and _rpcs(b) >= 3  # both nodes served (round robin)
            a.stop(grace_s=1)
            for n in range(6):  # node a is gone: its share is retried on b
                assert c.run(_compile(n % 3)).status == pb.OK
    finally:
        a.stop(grace_s=1)
        b.stop(grace_s=1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(port: int, cache: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "perfbox.cli", "serve", "--address",
                             f"127.0.0.1:{port}", "--workers", "2", "--preload", "",
                             "--cache-dir", str(cache), "--grace-s", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


@requires_bwrap
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_thousand_call_batch_resumes_after_the_server_is_killed(tmp_path: Path) -> None:
    """1000 calls (50 distinct kernels, 20 times each) in one batch; the server is SIGKILLed
    after 100 results and restarted on the same port: every request_id comes back exactly
    once, each with a result."""
    port, cache = _free_port(), tmp_path / "cache"
    server = _serve(port, cache)
    requests = [_compile(i % 50, request_id=f"call-{i}") for i in range(1000)]
    seen: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    restarted = None
    try:
        with ToolClient(f"127.0.0.1:{port}", timeout_s=300) as client:
            client.wait_ready(timeout_s=60)
            for result in client.run_batch(requests):
                seen[result.request_id] += 1
                statuses[result.status] += 1
                if sum(seen.values()) == 100 and restarted is None:
                    os.killpg(server.pid, signal.SIGKILL)  # the server and its workers
                    server.wait()
                    restarted = _serve(port, cache)
        assert restarted is not None, "the batch ended before the server could be killed"
        assert len(seen) == 1000 and set(seen.values()) == {1}, \
            [k for k, v in seen.items() if v != 1][:5]
        assert statuses == Counter({pb.OK: 1000})
    finally:
        for proc in (server, restarted):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)
