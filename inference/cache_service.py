"""The tool cache as a gRPC service (perfbox.v1.ToolCache): Put from a client-side draft or
another worker, Lookup (optionally claiming, optionally waiting for an in-flight entry), Stats.
`create_server(cache, address) -> (server, port)` binds port 0 in tests."""

from __future__ import annotations

import concurrent.futures as cf
import json
import math
from typing import Any

import grpc

from perfbox.api.v1 import rollout_pb2 as rpb
from perfbox.api.v1 import rollout_pb2_grpc
from perfbox.inference.tool_cache import (DEFAULT_KEEP_ALIVE_S, MAX_KEEP_ALIVE_S, CacheFull,
                                          ToolCache, owned_key)
from perfbox.inference.tool_call_parser import canonical_key

MAX_WAIT_S = 600.0
MAX_OUTPUT_BYTES = 1 << 20  # one Put entry's output


def _key(context: grpc.ServicerContext, name: str, params_json: str) -> str:
    if not name:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a cache entry needs the tool's name")
    try:
        params = json.loads(params_json or "{}")
    except json.JSONDecodeError as e:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"params_json is not JSON: {e}")
    if not isinstance(params, dict):
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "params_json must be a JSON object")
    return canonical_key(name, params)


def _text(output: Any) -> str:
    return output if isinstance(output, str) else getattr(output, "text", str(output))


class ToolCacheService(rollout_pb2_grpc.ToolCacheServicer):
    def __init__(self, cache: ToolCache) -> None:
        self.cache = cache

    def Put(self, request: rpb.PutRequest, context: grpc.ServicerContext) -> rpb.PutResponse:
        cached = []
        for entry in request.entries:
            key = _key(context, entry.name, entry.params_json)
            keep = entry.keep_alive_s or DEFAULT_KEEP_ALIVE_S
            if not (math.isfinite(keep) and 0 < keep <= MAX_KEEP_ALIVE_S):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "keep_alive_s: above 0, at "
                              f"most {MAX_KEEP_ALIVE_S:g}")
            if len(entry.output.encode()) > MAX_OUTPUT_BYTES:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "output: at most "
                              f"{MAX_OUTPUT_BYTES} bytes per entry")
            try:
                cached.append(self.cache.put(request.response_id, key, entry.output, keep))
            except CacheFull as e:
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{e}; retry when entries "
                              "expire or are claimed")
        return rpb.PutResponse(cached=cached)

    def Lookup(self, request: rpb.LookupRequest, context: grpc.ServicerContext
               ) -> rpb.LookupResponse:
        key = owned_key(request.response_id, _key(context, request.name, request.params_json))
        future = self.cache.claim(key) if request.claim else self.cache.lookup(key)
        if future is None:
            return rpb.LookupResponse(found=False)
        try:
            output = future.result(timeout=min(max(request.wait_s, 0.0), MAX_WAIT_S))
        except cf.TimeoutError:
            return rpb.LookupResponse(found=True, ready=False)
        except (cf.CancelledError, Exception):
            return rpb.LookupResponse(found=True, ready=False)
        return rpb.LookupResponse(found=True, ready=True, output=_text(output))

    def Stats(self, request: rpb.StatsRequest, context: grpc.ServicerContext
              ) -> rpb.StatsResponse:
        s = self.cache.stats
        return rpb.StatsResponse(hits=s.hits, misses=s.misses, launched=s.launched,
                                 deduplicated=s.deduplicated, expired=s.expired,
                                 wasted_tool_s=s.wasted_tool_s, entries=len(self.cache))


def create_server(cache: ToolCache, address: str = "127.0.0.1:0") -> tuple[grpc.Server, int]:
    server = grpc.server(cf.ThreadPoolExecutor(max_workers=16))
    rollout_pb2_grpc.add_ToolCacheServicer_to_server(ToolCacheService(cache), server)
    port = server.add_insecure_port(address)
    server.start()
    return server, port
