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
from perfbox.inference.tool_cache import CacheFull, ToolCache, owned_key
from perfbox.inference.tool_call_parser import canonical_key


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
                                        claim=True, response_id="r1"))
    assert hit.found and hit.ready and hit.output == "OK: 12 regs"
    miss = stub.Lookup(rpb.LookupRequest(name="compile", params_json='{"a":"x.cu"}', claim=True,
                                         response_id="r1"))
    assert not miss.found
    stats = stub.Stats(rpb.StatsRequest())
    assert (stats.hits, stats.misses, stats.entries) == (1, 1, 1)


def test_a_put_belongs_to_its_response_id(stub_and_cache) -> None:
    """Another owner neither finds an entry nor is blocked from putting its own for the same
    call: one client's Put can neither answer nor block another's."""
    stub, _ = stub_and_cache
    params = '{"submission": "class ModelNew: ..."}'
    mine = stub.Put(rpb.PutRequest(response_id="secret-a/t1", entries=[
        rpb.CacheEntry(name="check", params_json=params, output="OK: mine")]))
    theirs = stub.Put(rpb.PutRequest(response_id="secret-b/t1", entries=[
        rpb.CacheEntry(name="check", params_json=params, output="OK: theirs")]))
    assert list(mine.cached) == list(theirs.cached) == [True]
    for owner, text in (("secret-a/t1", "OK: mine"), ("secret-b/t1", "OK: theirs")):
        got = stub.Lookup(rpb.LookupRequest(name="check", params_json=params,
                                            response_id=owner))
        assert got.ready and got.output == text
    assert not stub.Lookup(rpb.LookupRequest(name="check", params_json=params)).found


@pytest.mark.parametrize("entry, words", [
    ({"keep_alive_s": float("nan")}, "keep_alive_s"),
    ({"keep_alive_s": float("inf")}, "keep_alive_s"),
    ({"keep_alive_s": 1e9}, "keep_alive_s"),
    ({"output": "x" * ((1 << 20) + 1)}, "output: at most"),
])
def test_unbounded_puts_are_refused(stub_and_cache, entry: dict, words: str) -> None:
    stub, _ = stub_and_cache
    with pytest.raises(grpc.RpcError) as e:
        stub.Put(rpb.PutRequest(response_id="r", entries=[rpb.CacheEntry(
            name="compile", params_json="{}", **{"output": "x", **entry})]))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and words in e.value.details()


def test_puts_past_the_byte_bound_wait_for_room() -> None:
    cache = ToolCache(max_put_bytes=100)
    assert cache.put("a", "k1", "x" * 60)
    with pytest.raises(CacheFull):
        cache.put("a", "k2", "x" * 60)
    cache.claim(owned_key("a", "k1"))
    cache.cancel_unclaimed()  # claimed: stays; the bound counts what is held
    assert cache.put("b", "k3", "x" * 40)


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
