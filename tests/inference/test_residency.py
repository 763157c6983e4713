"""Residency under a KV token budget: free tokens first, then prefix-cache entries least
recently used first, then the waiter expected back last; pinned waiters only by force; a
running sequence's KV never; nothing changes when the room cannot be made."""

from __future__ import annotations

import pytest

from perfbox.inference.residency import Residency, ToolTimes


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _residency(streams: int, budget: int, clock: Clock, times: ToolTimes | None = None
               ) -> Residency:
    return Residency(streams, times or ToolTimes(), budget, clock, pin_if_back_within_s=1.0)


def test_the_budget_is_tokens_not_streams() -> None:
    r = _residency(8, 1000, Clock())
    grants = [r.acquire(name, 300) for name in "abc"]
    assert all(g is not None for g in grants) and r.used_tokens() == 900
    assert r.acquire("d", 200) is None  # a free stream, but not 200 free tokens
    assert r.used_tokens() == 900 and r.holder("d") is None  # nothing changed
    assert r.acquire("d", 100) is not None and r.free_tokens() == 0


def test_headroom_is_required_but_not_charged() -> None:
    r = _residency(4, 1000, Clock())
    assert r.acquire("a", 950, headroom_tokens=64) is None
    grant = r.acquire("a", 900, headroom_tokens=64)
    assert grant is not None and r.used_tokens() == 900


def test_eviction_order_entries_lru_then_waiter_expected_back_last() -> None:
    clock, times = Clock(), ToolTimes()
    times.observe("compile", 0.5)
    times.observe("check", 30.0)
    times.observe("bench", 10.0)
    r = _residency(8, 1000, clock, times)
    for name in "abcd":
        assert r.acquire(name, 200) is not None
    r.waiting(r.holder("a"), "check")  # back in 30 s
    r.waiting(r.holder("b"), "bench")  # back in 10 s
    r.waiting(r.holder("c"), "compile")  # back in 0.5 s: pinned
    clock.now += 1
    old, new = r.holder("d"), None
    r.keep_as_cache(old, "d", list(range(150)))  # an ended request, 150 tokens
    clock.now += 1
    grant = r.acquire("e", 300)  # free 200 + d's entry 150 = 350: the entry goes, no waiter
    assert grant is not None and grant.evicted_owners == [] and r.cache_evictions == 1
    assert r.entry_of("d") is None
    grant = r.acquire("f", 300)  # 50 free: a waiter must go, the one back last (a)
    assert grant is not None and grant.evicted_owners == ["a"] and r.evictions == 1
    new = r.acquire("g", 400)  # b (200) + free 50 < 400, and c is pinned: no
    assert new is None and r.holder("b") is not None and r.holder("c") is not None
    evicted = r.grow(r.holder("e"), 400, force=True)  # a decoding sequence may take both
    assert evicted is not None and sorted(evicted[0]) == ["b", "c"]
    assert r.used_tokens() == sum(s.tokens for s in r.streams) == 1000  # the kept total


def test_own_entry_is_reused_and_its_tokens_recharged() -> None:
    clock = Clock()
    r = _residency(2, 1000, clock)
    grant = r.acquire("a", 300)
    r.keep_as_cache(grant.stream, "a", list(range(300)))
    again = r.acquire("a", 420)
    assert again is not None and again.stream == grant.stream and again.reuse == list(range(300))
    assert again.dropped_streams == [] and r.used_tokens() == 420


def test_grow_changes_nothing_without_room() -> None:
    r = _residency(4, 500, Clock())
    a, b = r.acquire("a", 200), r.acquire("b", 200)
    assert r.grow(a.stream, 200) is None and r.used_tokens() == 400
    assert r.grow(a.stream, 100) == ([], []) and r.used_tokens() == 500
    assert r.peak_tokens == 500 and r.holder("b") == b.stream


def test_a_budget_below_one_token_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one token"):
        Residency(2, ToolTimes(), 0)


def test_tool_times_are_an_ewma_with_a_default() -> None:
    times = ToolTimes()
    times.observe("t", 1.0)
    times.observe("t", 2.0)
    assert abs(times.expected("t") - 1.3) < 1e-9 and times.expected("never") == 2.0


def test_misuse_is_refused_not_absorbed() -> None:
    """Found by a red-team pass: a negative headroom let a context over the budget in; an
    owner could take a second stream; a cache entry or a negative grow could push the
    accounting past the budget. Each is now an error, and the rollout refuses the config."""
    from perfbox.inference.rollout_types import RolloutConfig

    r = _residency(4, 100, Clock())
    with pytest.raises(ValueError, match="0 or more"):
        r.acquire("a", 130, headroom_tokens=-40)
    grant = r.acquire("a", 50)
    with pytest.raises(ValueError, match="already holds"):
        r.acquire("a", 10)
    with pytest.raises(ValueError, match="0 or more tokens"):
        r.grow(grant.stream, -50)
    with pytest.raises(ValueError, match="an entry of 150 tokens"):
        r.keep_as_cache(grant.stream, "a", list(range(150)))
    assert r.used_tokens() == 50 and r.peak_tokens == 50
    with pytest.raises(ValueError, match="token counts"):
        RolloutConfig(admit_headroom_tokens=-30)
