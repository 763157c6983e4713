"""The result cache: canonical keys, atomic entries, corruption is a miss."""

from __future__ import annotations

from pathlib import Path

from perfbox.sandbox.cache import ResultCache, cache_key


def test_key_ignores_option_order_but_not_content() -> None:
    files = [("k.cu", "a")]
    a = cache_key("compile", "cuda", files, {"archs": ["sm_90"], "defines": ["X"]}, "nvcc 13")
    b = cache_key("compile", "cuda", files, {"defines": ["X"], "archs": ["sm_90"]}, "nvcc 13")
    assert a == b
    assert a != cache_key("compile", "cuda", [("k.cu", "b")], {"archs": ["sm_90"]}, "nvcc 13")
    assert a != cache_key("compile", "cuda", files, {"archs": ["sm_90"], "defines": ["X"]},
                          "nvcc 13.1")
    # names and contents are length-prefixed: moving bytes between them changes the key
    assert cache_key("c", "cuda", [("ab", "c")], {}, "") != cache_key("c", "cuda", [("a", "bc")],
                                                                      {}, "")


def test_round_trip_and_corruption(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path)
    cache.put("ab" * 32, b"result-bytes")
    assert cache.get("ab" * 32) == b"result-bytes"
    entry = tmp_path / "ab" / ("ab" * 32)
    entry.write_bytes(entry.read_bytes()[:-3] + b"xyz")
    assert cache.get("ab" * 32) is None
    assert not entry.exists()
    assert cache.get("cd" * 32) is None
    assert (cache.hits, cache.misses) == (1, 2)


def test_disabled_cache(tmp_path: Path) -> None:
    cache = ResultCache(None)
    cache.put("ab" * 32, b"x")
    assert cache.get("ab" * 32) is None
