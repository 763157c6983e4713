"""RolloutService over a real port: a training job's request streams tokens, tool calls and
results from the real engine and tool service, then a summary; bad requests are refused."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from perfbox.api.v1 import rollout_pb2 as rpb
from perfbox.api.v1 import rollout_pb2_grpc
from perfbox.client import ToolClient
from perfbox.inference import workload as W
from perfbox.inference.rollout_backends import StepBackend
from perfbox.inference.rollout_service import RolloutService, create_server
from perfbox.inference.workload_tools import ToolBridge
from tests.conftest import required_module, wait_until

required_module("llama_cpp", "PERFBOX_REQUIRE_LLAMA")
from perfbox.inference.engines.llama_cpp import LlamaCppEngine  # noqa: E402


@pytest.fixture(scope="module")
def stub(server) -> Iterator[rollout_pb2_grpc.RolloutServiceStub]:
    with ToolClient(f"127.0.0.1:{server[1]}", timeout_s=300) as client:
        bridge = ToolBridge(client, W.load().problems)
        service = RolloutService(StepBackend(
            lambda slots: LlamaCppEngine(num_slots=slots, threads=2), bridge.run))
        grpc_server, port = create_server(service)
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        yield rollout_pb2_grpc.RolloutServiceStub(channel)
        channel.close()
        grpc_server.stop(0)


@pytest.mark.slow
def test_a_trajectory_streams_tokens_tools_and_a_summary(stub) -> None:
    events = list(stub.Run(rpb.RolloutRequest(trajectory_ids=["relu"],
                                              mode="resident+speculate"), timeout=600))
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[-1] == "summary" and kinds.count("done") == 1
    assert kinds.count("tool_call") == 4 and kinds.count("tool_result") == 4
    text = "".join(e.tokens.text for e in events if e.WhichOneof("event") == "tokens")
    assert '"name": "compile"' in text and "<tool_call>" in text
    results = [e.tool_result for e in events if e.WhichOneof("event") == "tool_result"]
    assert [r.tool for r in results] == ["compile", "disasm", "compile", "check"]
    assert all(r.status == "OK" for r in results)
    done = next(e.done for e in events if e.WhichOneof("event") == "done")
    assert done.generated_tokens == kinds.count("tokens") and "<tool_response>" in done.text
    assert events[-1].summary.spec_hits >= 1


@pytest.mark.parametrize("request_, code", [
    (rpb.RolloutRequest(mode="fastest"), grpc.StatusCode.INVALID_ARGUMENT),
    (rpb.RolloutRequest(trajectory_ids=["nope"]), grpc.StatusCode.INVALID_ARGUMENT),
    (rpb.RolloutRequest(count=10**6), grpc.StatusCode.INVALID_ARGUMENT),
])
def test_bad_requests_are_refused(stub, request_, code) -> None:
    with pytest.raises(grpc.RpcError) as e:
        list(stub.Run(request_, timeout=60))
    assert e.value.code() == code


@pytest.mark.slow
def test_a_cancelled_rollout_stops_and_frees_the_engine(stub) -> None:
    """Cancelling the call stops its rollout: eight trajectories would hold the engine for
    minutes, but the next call is accepted within seconds (while a rollout runs, a second call
    is refused with RESOURCE_EXHAUSTED)."""
    call = stub.Run(rpb.RolloutRequest(count=8, mode="resident"), timeout=600)
    assert next(call).WhichOneof("event") == "tokens"
    call.cancel()
    with pytest.raises(grpc.RpcError) as e:
        list(call)
    assert e.value.code() == grpc.StatusCode.CANCELLED
    wait_until(lambda: _accepted(stub), timeout_s=20, what="the engine to be free")


def _accepted(stub: rollout_pb2_grpc.RolloutServiceStub) -> bool:
    """Whether a new rollout is accepted (it is cancelled at once)."""
    call = stub.Run(rpb.RolloutRequest(trajectory_ids=["relu"], mode="resident"), timeout=600)
    try:
        next(call)
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
            return False
        raise
    finally:
        call.cancel()
    return True
