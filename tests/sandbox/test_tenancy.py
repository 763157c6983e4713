"""Tenancy over a real port with two clients' bearer tokens: request ids are scoped to their
client, nobody cancels (or even finds) another client's job, and /metrics listens on loopback
by default and may require its own bearer token."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from perfbox.api.v1 import tools_pb2 as pb
from perfbox.client import ToolClient
from perfbox.sandbox.config import ConfigError, ServerConfig, check
from perfbox.sandbox.metrics import serve_metrics
from perfbox.sandbox.scheduler import Job
from perfbox.sandbox.server import ToolServer
from tests.conftest import (SPIN, TRITON_KERNEL, requires_bwrap, start_server, triton_request,
                            wait_until)

TOKEN_A = "tenancy-token-of-a-0123456789"
TOKEN_B = "tenancy-token-of-b-9876543210"
METRICS_TOKEN = "metrics-token-0123456789abcdef"
SLOW = "import time\ntime.sleep({s})\n" + TRITON_KERNEL  # runs a while, then compiles fine


@pytest.fixture(scope="module")
def tenants(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ToolServer, int]]:
    """Clients job-a and job-b; /metrics on loopback behind METRICS_TOKEN."""
    d = tmp_path_factory.mktemp("tenancy")
    (d / "tokens").write_text(f"job-a {TOKEN_A}\njob-b {TOKEN_B}\n")
    (d / "metrics-token").write_text(METRICS_TOKEN + "\n")
    server, port = start_server(d, workers=2, preload=(), tokens_file=d / "tokens",
                                metrics_address=":0", metrics_token_file=d / "metrics-token")
    yield server, port
    server.stop(grace_s=2)


def _client(port: int, token: str) -> ToolClient:
    return ToolClient(f"127.0.0.1:{port}", token=token, timeout_s=120)


def _running(server: ToolServer, client: str, request_id: str) -> Job:
    wait_until(lambda: server.scheduler.find(request_id=request_id, client=client) is not None,
               what=f"{client}'s job {request_id}")
    job = server.scheduler.find(request_id=request_id, client=client)
    assert job is not None
    return job


@requires_bwrap
def test_another_client_can_neither_cancel_nor_probe_a_job(tenants: tuple[ToolServer, int]
                                                           ) -> None:
    server, port = tenants
    with _client(port, TOKEN_A) as a, _client(port, TOKEN_B) as b:
        future = a.stub.Run.future(triton_request(SLOW.format(s=3), request_id="a-slow",
                                                  no_cache=True),
                                   timeout=120, metadata=a.metadata)
        job = _running(server, "job-a", "a-slow")
        unknown = pb.CancelResponse(cancelled=False, state="unknown")
        assert b.cancel(request_id="a-slow") == unknown
        assert b.cancel(job_id=job.job_id) == unknown
        assert b.cancel(job_id="0123456789abcdef") == unknown  # the same as a made-up id
        result = future.result()
        assert result.status == pb.OK and result.job_id == job.job_id, result.summary


@requires_bwrap
def test_a_client_cancels_its_own_job(tenants: tuple[ToolServer, int]) -> None:
    server, port = tenants
    with _client(port, TOKEN_A) as a:
        spin = triton_request(SPIN, request_id="a-spin", no_cache=True)
        future = a.stub.Run.future(spin, timeout=120, metadata=a.metadata)
        _running(server, "job-a", "a-spin")
        response = a.cancel(request_id="a-spin")
        assert response.cancelled and response.state in ("queued", "running")
        assert future.result().status == pb.CANCELLED
        job = server.scheduler.find(request_id="a-spin", client="job-a")
        assert job is None  # finished: no longer indexed


@requires_bwrap
def test_a_batch_job_belongs_to_the_client_that_sent_it(tenants: tuple[ToolServer, int]
                                                        ) -> None:
    """RunBatch submits from a reader thread of its own: the job still carries the caller."""
    server, port = tenants
    with _client(port, TOKEN_A) as a, _client(port, TOKEN_B) as b:
        results: list[pb.ToolResult] = []
        spin = triton_request(SPIN, request_id="a-batch-spin", no_cache=True)
        reader = threading.Thread(target=lambda: results.extend(a.run_batch([spin])))
        reader.start()
        assert _running(server, "job-a", "a-batch-spin").client == "job-a"
        assert not b.cancel(request_id="a-batch-spin").cancelled
        assert a.cancel(request_id="a-batch-spin").cancelled
        reader.join(timeout=60)
    assert [r.status for r in results] == [pb.CANCELLED]


@requires_bwrap
def test_two_clients_may_use_the_same_request_id_at_once(tenants: tuple[ToolServer, int]
                                                         ) -> None:
    server, port = tenants
    sources = {"job-a": SLOW.format(s=2).replace("copy_kernel", "kernel_of_a"),
               "job-b": SLOW.format(s=2).replace("copy_kernel", "kernel_of_b")}
    results: dict[str, pb.ToolResult] = {}
    with _client(port, TOKEN_A) as a, _client(port, TOKEN_B) as b:
        clients = {"job-a": a, "job-b": b}

        def run(name: str) -> None:
            request = triton_request(sources[name], request_id="same-id", no_cache=True)
            results[name] = clients[name].run(request)

        threads = [threading.Thread(target=run, args=(name,)) for name in clients]
        for thread in threads:
            thread.start()
        jobs = {name: _running(server, name, "same-id") for name in clients}
        assert jobs["job-a"] is not jobs["job-b"]
        for thread in threads:
            thread.join(timeout=120)
    for name, result in results.items():
        assert result.status == pb.OK and result.request_id == "same-id", result.summary
        assert result.job_id == jobs[name].job_id
        assert [k.name for k in result.compile.kernels] == [f"kernel_of_{name[-1]}"]


def _get(port: int, token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@requires_bwrap
def test_metrics_need_their_token_and_never_show_tokens(tenants: tuple[ToolServer, int]
                                                        ) -> None:
    server, port = tenants
    with _client(port, TOKEN_A) as a:
        assert a.list_tools().tools  # at least one RPC labelled with its client
    endpoint = server.metrics_endpoint
    assert endpoint is not None
    assert endpoint._server.server_address[0] == "127.0.0.1"  # type: ignore[attr-defined]
    for token in (None, "wrong", METRICS_TOKEN + "x", TOKEN_A):
        assert _get(endpoint.port, token)[0] == 401, token
    status, text = _get(endpoint.port, METRICS_TOKEN)
    assert status == 200 and 'client="job-a"' in text
    for secret in (TOKEN_A, TOKEN_B, METRICS_TOKEN):
        assert secret not in text


def test_metrics_default_to_loopback_and_stay_open_without_a_token() -> None:
    endpoint = serve_metrics(CollectorRegistry(), ":0")
    try:
        assert endpoint._server.server_address[0] == "127.0.0.1"  # type: ignore[attr-defined]
        assert _get(endpoint.port)[0] == 200
    finally:
        endpoint.close()
    endpoint._thread.join(5)
    assert not endpoint._thread.is_alive()


def test_a_metrics_token_without_an_endpoint_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs --metrics-address"):
        check(ServerConfig(metrics_token_file=tmp_path / "token"))
    with pytest.raises(ConfigError, match="cache_max_bytes"):
        check(ServerConfig(cache_max_bytes=0))
