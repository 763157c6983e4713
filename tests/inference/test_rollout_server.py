"""`perfbox worker`'s server: RolloutService and ToolCache on one port with health checks, and
Prometheus metrics of rollouts and speculation, with the real engine and tool service."""

from __future__ import annotations

import grpc
import pytest

from tests.conftest import required_module
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from perfbox.api.v1 import rollout_pb2 as rpb
from perfbox.api.v1 import rollout_pb2_grpc
from perfbox.client import ToolClient
from perfbox.inference import workload as W
from perfbox.inference.rollout_backends import StepBackend
from perfbox.inference.workload_tools import ToolBridge
from perfbox.inference.rollout_server import create_worker

required_module("llama_cpp", "PERFBOX_REQUIRE_LLAMA")
from perfbox.inference.engines.llama_cpp import LlamaCppEngine  # noqa: E402


@pytest.mark.slow
def test_worker_serves_rollouts_cache_health_and_metrics(server) -> None:
    with ToolClient(f"127.0.0.1:{server[1]}", timeout_s=300) as client:
        bridge = ToolBridge(client, W.load().problems)
        grpc_server, port, registry = create_worker(StepBackend(
            lambda slots: LlamaCppEngine(num_slots=slots, threads=2), bridge.run))
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                status = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=10).status
                assert status == health_pb2.HealthCheckResponse.SERVING
                events = list(rollout_pb2_grpc.RolloutServiceStub(channel).Run(
                    rpb.RolloutRequest(trajectory_ids=["relu"], mode="resident+speculate"),
                    timeout=600))
                summary = events[-1].summary
                cache = rollout_pb2_grpc.ToolCacheStub(channel)
                cache.Put(rpb.PutRequest(response_id="r", entries=[rpb.CacheEntry(
                    name="compile", params_json='{"a": 1}', output="OK")]), timeout=10)
                assert cache.Lookup(rpb.LookupRequest(name="compile", params_json='{"a": 1.0}',
                                                      claim=True, response_id="r"),
                                    timeout=10).ready
        finally:
            grpc_server.stop(0)
    samples = {s.name: s.value for f in text_string_to_metric_families(
        generate_latest(registry).decode()) for s in f.samples}
    assert samples["perfbox_rollouts_total"] == 1
    assert samples["perfbox_speculation_hits_total"] == summary.spec_hits + 1  # + the Lookup
    assert samples["perfbox_generated_tokens_total"] > 0
    assert samples["perfbox_tool_cache_entries"] == 1
