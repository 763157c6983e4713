"""The tool cache: hits, misses, dedup, keep-alive expiry and wasted tool time."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from perfbox.inference.tool_cache import ToolCache, owned_key
from perfbox.inference.tool_call_parser import canonical_key


class FakeClock:
    """Keep-alive expiry without sleeping."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_launch_claim_hit_and_miss() -> None:
    cache = ToolCache()
    key = canonical_key("compile", {"file": "k.cu"})
    with ThreadPoolExecutor(2) as pool:
        assert cache.launch(key, lambda: "compiled", pool.submit)
        assert not cache.launch(key, lambda: "again", pool.submit)  # dedup
        future = cache.claim(canonical_key("compile", {"file": "k.cu"}))
        assert future is not None and future.result(timeout=5) == "compiled"
    assert cache.claim(canonical_key("compile", {"file": "other.cu"})) is None
    s = cache.stats
    assert (s.hits, s.misses, s.launched, s.deduplicated) == (1, 1, 1, 1)


def test_unclaimed_entries_expire_and_count_as_waste() -> None:
    clock = FakeClock()
    cache = ToolCache(clock)
    release = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        cache.launch("k", lambda: release.wait(5) or "out", pool.submit, keep_alive_s=10)
        release.set()
        clock.now = 11
        assert cache.claim("k") is None and cache.stats.expired == 1
    assert cache.stats.wasted_tool_s >= 0 and len(cache) == 0


def test_put_from_outside_and_cancel_unclaimed() -> None:
    cache = ToolCache()
    assert cache.put("resp-1", "a", {"status": "OK"})
    assert not cache.put("resp-1", "a", {"status": "OK"})
    assert cache.put("resp-1", "b", {"status": "OK"})
    assert cache.claim("a") is None  # a Put is stored for its owner
    assert cache.claim(owned_key("resp-1", "a")).result() == {"status": "OK"}
    assert cache.cancel_unclaimed() == 1 and len(cache) == 1  # "b" dropped, "a" claimed stays
