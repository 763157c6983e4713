"""The gRPC service end to end: real port, real bubblewrap workers, real compilers."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from perfbox.api.v1 import tools_pb2 as pb
from perfbox.client import AsyncToolClient, ToolClient, make_request, server_retry_delay_s
from tests.conftest import (SAMPLE_CU, SPIN, TRITON_KERNEL, cuda_request, free_port,
                            start_server, start_spinning_job, triton_request, wait_until)


def test_compile_then_cache_hit(client: ToolClient) -> None:
    request = cuda_request(SAMPLE_CU.replace("scale", "scale_cached"), request_id="first")
    first = client.run(request)
    assert first.status == pb.OK, first.summary
    assert not first.cache_hit and first.request_id == "first"
    assert first.compile.kernels[0].registers > 0
    assert first.identity.backend == "bwrap" and "nvcc" in first.identity.toolkit
    request.request_id = "second"
    second = client.run(request)
    assert second.cache_hit and second.request_id == "second"
    assert second.compile == first.compile  # the recorded report, compile_ms included
    assert second.timings.run_ms == 0 and second.timings.queue_ms == 0 and not second.job_id
    assert first.timings.run_ms > 0


def test_default_and_explicit_arch_share_a_cache_entry(client: ToolClient) -> None:
    source = SAMPLE_CU.replace("scale", "scale_arch")
    assert not client.run(cuda_request(source)).cache_hit
    assert client.run(cuda_request(source, archs=["sm_90"])).cache_hit


def test_no_cache_runs_again(client: ToolClient) -> None:
    request = cuda_request(SAMPLE_CU.replace("scale", "scale_nocache"))
    client.run(request)
    request.no_cache = True
    assert not client.run(request).cache_hit


def test_compile_error_is_a_result_not_an_rpc_error(client: ToolClient) -> None:
    result = client.run(cuda_request("__global__ void f() { oops; }"))
    assert result.status == pb.COMPILE_ERROR
    assert result.compile.diagnostics[0].line == 1
    assert "Compilation failed" in result.summary


def test_triton_disasm_through_the_service(client: ToolClient) -> None:
    result = client.run(triton_request(tool="disasm", include_sass=True))
    assert result.status == pb.OK, result.summary + result.stderr
    kernel = result.disasm.kernels[0]
    assert kernel.name == "copy_kernel" and kernel.mix.total > 0 and "LDG" in kernel.sass


def test_stream_reports_queued_started_logs_result(client: ToolClient) -> None:
    source = TRITON_KERNEL + "\nprint('hello from the module')\n"
    events = list(client.run_stream(triton_request(source, request_id="s1", no_cache=True)))
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[0] == "queued" and kinds[1] == "started" and kinds[-1] == "result"
    assert any(e.log.text.startswith("hello from the module") for e in events if e.HasField("log"))
    assert events[-1].result.status == pb.OK and "hello from the module" in events[-1].result.stdout
    assert all(e.request_id == "s1" for e in events)


def test_batch_preserves_request_ids_and_rejects_bad_items(client: ToolClient) -> None:
    requests = [cuda_request(SAMPLE_CU.replace("scale", f"batch{i}"), request_id=f"b{i}")
                for i in range(6)]
    bad = cuda_request(request_id="bad")
    bad.files[0].name = "../escape.cu"
    results = client.run_batch_dict(requests + [bad])
    assert set(results) == {f"b{i}" for i in range(6)} | {"bad"}
    assert all(results[f"b{i}"].status == pb.OK for i in range(6))
    assert "batch3" in results["b3"].compile.kernels[0].demangled
    assert results["bad"].status == pb.REJECTED and ".." in results["bad"].error


def test_batch_needs_unique_ids(client: ToolClient) -> None:
    with pytest.raises(ValueError, match="unique"):
        list(client.run_batch([cuda_request(request_id="x"), cuda_request(request_id="x")]))


def test_cancel_kills_a_running_job(client: ToolClient) -> None:
    request = triton_request(SPIN, request_id="to-cancel", no_cache=True)
    request.limits.wall_time_ms = 60_000
    future = client.stub.Run.future(request, timeout=120)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        response = client.cancel(request_id="to-cancel")
        if response.cancelled:
            break
        time.sleep(0.2)
    assert response.cancelled and response.state in ("queued", "running")
    started = time.monotonic()
    result = future.result()
    assert result.status == pb.CANCELLED
    assert time.monotonic() - started < 10


def test_cancel_of_unknown_id(client: ToolClient) -> None:
    assert client.cancel(request_id="never-sent").state == "unknown"
    with pytest.raises(grpc.RpcError) as info:
        client.cancel()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_client_deadline_cancels_the_job(client: ToolClient, server) -> None:
    request = triton_request(SPIN, request_id="deadline", no_cache=True)
    with pytest.raises(grpc.RpcError) as info:
        client.run(request, timeout_s=3)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    deadline = time.monotonic() + 10
    while server[0].scheduler.find(request_id="deadline") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server[0].scheduler.find(request_id="deadline") is None


def test_health_and_reflection(server) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{server[1]}")
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", "perfbox.v1.ToolService"):
        status = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(
        list_services="")]), timeout=5)
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert "perfbox.v1.ToolService" in names and "grpc.health.v1.Health" in names
    channel.close()


def test_list_tools_and_device_info(client: ToolClient) -> None:
    tools = {t.name: t for t in client.list_tools().tools}
    assert set(tools) == {"compile", "disasm", "check", "bench", "profile", "sanitize"}
    assert tools["profile"].needs_gpu and tools["sanitize"].needs_gpu
    assert tools["compile"].available and pb.LANGUAGE_TRITON in tools["compile"].languages
    info = client.device_info()
    versions = {t.name: t.version for t in info.toolchain}
    assert versions["nvcc"] and versions["triton"]
    if not info.gpu_available:
        assert "No NVIDIA GPU" in info.message and "compile" in info.message
        assert set(info.available_tools) == {"compile", "disasm", "check", "bench"}
        assert not tools["profile"].available and not tools["sanitize"].available


def test_async_client_run_and_batch(server) -> None:
    async def main() -> tuple[pb.ToolResult, list[pb.ToolResult]]:
        async with AsyncToolClient(f"127.0.0.1:{server[1]}") as client:
            one = await client.run(cuda_request(SAMPLE_CU.replace("scale", "async_one")))
            batch = [r async for r in client.run_batch(
                [cuda_request(SAMPLE_CU.replace("scale", f"ab{i}"), request_id=f"a{i}")
                 for i in range(3)])]
            return one, batch

    one, batch = asyncio.run(main())
    assert one.status == pb.OK
    assert sorted(r.request_id for r in batch) == ["a0", "a1", "a2"]


def test_client_retries_until_the_server_is_up(tmp_path: Path) -> None:
    import threading

    port = free_port()
    holder = {}

    def start_later() -> None:
        time.sleep(1.5)
        holder["server"] = start_server(tmp_path, address=f"127.0.0.1:{port}", workers=1,
                                        preload=())[0]

    thread = threading.Thread(target=start_later)
    thread.start()
    try:
        with ToolClient(f"127.0.0.1:{port}", timeout_s=60) as client:
            result = client.run(cuda_request())
        assert result.status == pb.OK
    finally:
        thread.join()
        holder["server"].stop(grace_s=1)


def test_full_queue_answers_resource_exhausted(tmp_path: Path) -> None:
    srv, port = start_server(tmp_path, workers=1, max_queue=1, preload=("triton",))

    try:
        with ToolClient(f"127.0.0.1:{port}", timeout_s=60) as client:
            running = start_spinning_job(client, srv, wall_time_ms=8000)
            spin = triton_request(SPIN, no_cache=True)
            spin.limits.wall_time_ms = 8000
            queued = client.stub.Run.future(spin, timeout=60)
            wait_until(lambda: srv.scheduler.queue_depth == 1)
            with pytest.raises(grpc.RpcError) as info:
                client.stub.Run(cuda_request(), timeout=30)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "retry in" in info.value.details()
            delay = server_retry_delay_s(info.value)  # the wait, machine-readable
            assert delay is not None and 0.1 <= delay <= 30
            assert running.result().status == pb.TIMEOUT
            assert queued.result().status == pb.TIMEOUT
    finally:
        srv.stop(grace_s=1)


def test_cancel_while_the_worker_restarts(tmp_path: Path) -> None:
    srv, port = start_server(tmp_path, workers=1)
    try:
        srv.scheduler.slots[0].worker.kill()  # the next job must wait for a fresh worker
        with ToolClient(f"127.0.0.1:{port}", timeout_s=60) as client:
            request = triton_request(SPIN, request_id="early-cancel", no_cache=True)
            future = client.stub.Run.future(request, timeout=60)
            deadline = time.monotonic() + 10
            while not client.cancel(request_id="early-cancel").cancelled:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            started = time.monotonic()
            assert future.result().status == pb.CANCELLED
            assert time.monotonic() - started < 15
    finally:
        srv.stop(grace_s=1)


def test_retry_policy_backoff_is_exponential_and_capped() -> None:
    from perfbox.client import RetryPolicy

    assert list(RetryPolicy(5, 0.2, 0.5).backoffs_s()) == [0.2, 0.4, 0.5, 0.5]
    assert list(RetryPolicy(1).backoffs_s()) == []


def test_batch_larger_than_the_queue_is_streamed_not_refused(tmp_path: Path) -> None:
    srv, port = start_server(tmp_path, workers=2, max_queue=3, batch_window=2, preload=())
    try:
        with ToolClient(f"127.0.0.1:{port}", timeout_s=120) as client:
            requests = [cuda_request(SAMPLE_CU.replace("scale", f"window{i}"),
                                     request_id=f"w{i}") for i in range(12)]
            results = client.run_batch_dict(requests)
        assert sorted(results) == sorted(f"w{i}" for i in range(12))
        assert all(r.status == pb.OK for r in results.values())
    finally:
        srv.stop(grace_s=1)


def test_gpu_only_requests_say_what_is_missing_on_a_cpu_node(client: ToolClient) -> None:
    """Without a GPU: profile/sanitize are refused by the service, a bare kernel by check."""
    import json

    info = client.device_info()
    if info.gpu_available:
        pytest.skip("this node has a GPU")
    fixtures = Path(__file__).resolve().parents[1] / "fixtures"
    program = (fixtures / "programs" / "profile_kernels.cu").read_text()
    for tool in ("profile", "sanitize"):
        result = client.run(make_request(tool, {"p.cu": program}, language="cuda"))
        assert result.status == pb.UNAVAILABLE_HERE and "needs a GPU" in result.summary
    spec = json.loads((fixtures / "bare" / "linear_relu.launch.json").read_text())
    files = {"reference.py": (fixtures / "kernelbench" / "reference.py").read_text(),
             "k.cu": (fixtures / "bare" / "linear_relu.cu").read_text()}
    result = client.run(make_request("check", files, language="kernelbench", launch=spec))
    assert result.status == pb.UNAVAILABLE_HERE and "bare CUDA kernel" in result.summary


def test_list_tools_gives_each_tool_its_function_schema(client: ToolClient) -> None:
    """The schemas a model's prompt and an RL framework's tool config are built from, and the
    same ones a call's arguments are checked against."""
    import json

    from perfbox import tools

    for info in client.list_tools().tools:
        schema = json.loads(info.function_schema)
        assert schema == tools.function_schema(tools.get(info.name))
    assert tools.check_arguments("check", {"submission": "class ModelNew: ..."}) == []
    problems = tools.check_arguments("check", {"code": 1})
    assert any("no argument 'code'" in p for p in problems)
    assert any("needs 'submission'" in p for p in problems)
    assert tools.check_arguments("sanitize", {"submission": "x", "check": "leakcheck"}) == [
        "sanitize: 'check' must be one of memcheck, racecheck, initcheck, synccheck"]
    assert tools.check_arguments("compile", {"source": "x", "arch": 90}) == [
        "compile: 'arch' must be a string"]
