"""The ToolCache gRPC service over a real port: Put, claiming Lookup, waiting on an in-flight
speculative launch, Stats, and INVALID_ARGUMENT for bad params."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from perfbox.api.v1 import rollout_pb2 as rpb
from perfbox.api.v1 import rollout_pb2_grpc
from perfbox.inference.cache_service import create_server
from perfbox.inference.tool_cache import ToolCache
from perfbox.inference.toolcall import canonical_key


@pytest.fixture()
def stub_and_cache():
    cache = ToolCache()
    server, port = create_server(cache)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield rollout_pb2_grpc.ToolCacheStub(channel), cache
    channel.close()
    server.stop(0)


def test_put_then_claiming_lookup_with_canonical_params(stub_and_cache) -> None:
    stub, _ = stub_and_cache
    put = stub.Put(rpb.PutRequest(response_id="r1", entries=[
        rpb.CacheEntry(name="compile", params_json='{"b": 1.0, "a": "k.cu"}', output="OK: 12 regs"),
        rpb.CacheEntry(name="compile", params_json='{"a": "k.cu", "b": 1}', output="dup")]))
    assert list(put.cached) == [True, False]  # the same call, spelled differently
    hit = stub.Lookup(rpb.LookupRequest(name="compile", params_json='{"a":"k.cu","b":1}',
                                        claim=True))
    assert hit.found and hit.ready and hit.output == "OK: 12 regs"
    miss = stub.Lookup(rpb.LookupRequest(name="compile", params_json='{"a":"x.cu"}', claim=True))
    assert not miss.found
    stats = stub.Stats(rpb.StatsRequest())
    assert (stats.hits, stats.misses, stats.entries) == (1, 1, 1)


def test_lookup_waits_for_an_in_flight_launch(stub_and_cache) -> None:
    stub, cache = stub_and_cache
    release = threading.Event()
    key = canonical_key("check", {"problem": "relu"})
    with ThreadPoolExecutor(1) as pool:
        cache.launch(key, lambda: release.wait(5) and "OK: correct", pool.submit)
        params = json.dumps({"problem": "relu"})
        pending = stub.Lookup(rpb.LookupRequest(name="check", params_json=params))
        assert pending.found and not pending.ready
        threading.Timer(0.2, release.set).start()
        done = stub.Lookup(rpb.LookupRequest(name="check", params_json=params, claim=True,
                                             wait_s=5))
    assert done.ready and done.output == "OK: correct"


@pytest.mark.parametrize("params", ["[1, 2]", "{not json"])
def test_bad_params_are_invalid_argument(stub_and_cache, params: str) -> None:
    stub, _ = stub_and_cache
    with pytest.raises(grpc.RpcError) as e:
        stub.Lookup(rpb.LookupRequest(name="compile", params_json=params))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
