"""Residency: free slots first, then evict the waiter expected back last, pin the ones
expected back soon, never take a decoding sequence's slot."""

from __future__ import annotations

from perfbox.inference.residency import Residency, ToolTimes


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_eviction_order_follows_expected_remaining_tool_time() -> None:
    clock, times = Clock(), ToolTimes()
    times.observe("compile", 0.5)
    times.observe("check", 30.0)
    r = Residency(3, times, clock, pin_if_back_within_s=1.0)
    a, _ = r.acquire("a")
    b, _ = r.acquire("b")
    c, _ = r.acquire("c")
    r.waiting(a, "compile")  # back in 0.5 s: pinned
    r.waiting(b, "check")  # back in 30 s: the victim
    assert r.acquire("d") == (b, "b") and r.evictions == 1
    assert r.holder("d") == b and r.holder("b") is None
    # c decodes, a is expected back soon: nobody can be evicted now
    assert r.acquire("e") is None
    clock.now += 10  # a's compile is long overdue, but overdue is not "back later"
    assert r.acquire("e") is None


def test_prefer_and_lru_free_slots_and_ewma() -> None:
    clock, times = Clock(), ToolTimes()
    r = Residency(2, times, clock)
    s0, _ = r.acquire("x")
    clock.now += 1
    s1, _ = r.acquire("y")
    r.release(s0)
    clock.now += 1
    r.release(s1)
    assert r.acquire("z") == (s0, None)  # least recently used free slot
    assert r.acquire("y", prefer=s1) == (s1, None)  # its own old slot (prefix cache)
    times.observe("t", 1.0)
    times.observe("t", 2.0)
    assert abs(times.expected("t") - 1.3) < 1e-9 and times.expected("never") == 2.0
