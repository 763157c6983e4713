"""The rollout worker as a long-running service (`perfbox worker`): RolloutService and the
ToolCache on one gRPC port with health checks, tools from the node's tool service through the
client, and Prometheus metrics of rollouts and speculation (hits, misses, wasted tool time).

It runs beside `perfbox serve` in the same pod (deploy/): the engine keeps the GPU busy while
the tool service's jobs run next to it. The engine is the embedded llama.cpp (CPU) or vLLM (GPU
nodes), through perfbox.inference.rollout_backends.
"""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Iterator
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from perfbox.api.v1 import rollout_pb2_grpc
from perfbox.inference.cache_service import ToolCacheService
from perfbox.inference.rollout_backends import RolloutBackend
from perfbox.inference.rollout_service import RolloutService
from perfbox.inference.task_service import TaskRunner
from perfbox.inference.tool_cache import ToolCache


class SpeculationCollector:
    """Prometheus collector over the rollouts' totals and the shared tool cache's counters."""

    def __init__(self, rollouts: RolloutService, cache: ToolCache) -> None:
        self.rollouts, self.cache = rollouts, cache

    def collect(self) -> Iterator[Any]:
        t, c = self.rollouts.totals, self.cache.stats
        for name, help_, value in (
                ("perfbox_rollouts", "Rollouts finished", t.rollouts),
                ("perfbox_generated_tokens", "Tokens generated", t.generated_tokens),
                ("perfbox_prefill_tokens", "Tokens prefilled", t.prefill_tokens),
                ("perfbox_reprefill_tokens", "Tokens prefilled again", t.reprefill_tokens),
                ("perfbox_speculation_hits", "Tool calls served by a speculative launch",
                 t.spec_hits + c.hits),
                ("perfbox_speculation_misses", "Tool calls with no speculative launch",
                 t.spec_misses + c.misses),
                ("perfbox_speculation_launched", "Speculative launches", t.spec_launched
                 + c.launched),
                ("perfbox_speculation_wasted_tool_seconds",
                 "Tool seconds spent on launches never claimed", t.wasted_tool_s
                 + c.wasted_tool_s)):
            yield CounterMetricFamily(name, help_, value=value)
        yield GaugeMetricFamily("perfbox_tool_cache_entries", "Entries in the tool cache",
                                value=len(self.cache))


def create_worker(backend: RolloutBackend, address: str = "127.0.0.1:0",
                  tasks: TaskRunner | None = None
                  ) -> tuple[grpc.Server, int, CollectorRegistry]:
    """Starts the worker's gRPC server; returns it, its port and its metrics registry. One
    tool cache serves the ToolCache service and the client tasks' rollouts, so an output a
    client Puts is what the model's matching call claims."""
    cache = tasks.cache if tasks is not None else ToolCache()
    rollouts = RolloutService(backend, tasks=tasks)
    # RunTasks streams hold a thread each, bounded by the runner's max_calls: the threads
    # beyond them keep Health, ToolCache and Run answering while the streams are full
    streams = tasks.max_calls if tasks is not None else 0
    server = grpc.server(cf.ThreadPoolExecutor(max_workers=32 + streams))
    rollout_pb2_grpc.add_RolloutServiceServicer_to_server(rollouts, server)
    rollout_pb2_grpc.add_ToolCacheServicer_to_server(ToolCacheService(cache), server)
    checker = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    server.start()
    checker.set("", health_pb2.HealthCheckResponse.SERVING)
    registry = CollectorRegistry()
    registry.register(SpeculationCollector(rollouts, cache))  # type: ignore[arg-type]
    return server, port, registry
