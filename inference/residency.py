"""Which sequences keep their KV while their tool runs, and which give it up.

Slots are the engine's KV capacity. A decoding sequence always keeps its slot (decoding is
never stalled to make room). A sequence waiting for a tool keeps its slot while nobody needs it;
when a slot is needed and none is free, the policy evicts the waiting sequence whose tool is
expected to return *last* (expected remaining time from an EWMA of observed durations per
tool), and that sequence is re-prefilled when its tool returns. In `resubmit` mode the slots of
ended requests serve as the engine's prefix cache: a returning request reuses its old slot when
it still holds its prefix, else takes the least recently used free one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

DEFAULT_TOOL_S = 2.0  # expected duration of a tool never seen before
EWMA_WEIGHT = 0.3
PIN_IF_BACK_WITHIN_S = 1.0  # a waiting sequence expected back sooner keeps its KV: the
# newcomer waits for a slot instead (re-prefilling the waiter would cost more)


@dataclass
class ToolTimes:
    """Observed tool durations, per tool: the expectation eviction is ordered by."""

    expected_s: dict[str, float] = field(default_factory=dict)

    def observe(self, tool: str, seconds: float) -> None:
        old = self.expected_s.get(tool)
        self.expected_s[tool] = seconds if old is None else \
            (1 - EWMA_WEIGHT) * old + EWMA_WEIGHT * seconds

    def expected(self, tool: str) -> float:
        return self.expected_s.get(tool, DEFAULT_TOOL_S)


@dataclass
class SlotState:
    """Who holds a slot and why."""

    owner: str | None = None  # trajectory id; None when free
    waiting_tool: str = ""  # the tool the owner waits for ("" while decoding)
    tool_started_at: float = 0.0
    last_used_at: float = 0.0


class Residency:
    """Slot bookkeeping; the engine's seq_id of a slot is the slot's index."""

    def __init__(self, num_slots: int, tool_times: ToolTimes,
                 clock: Callable[[], float] = time.monotonic,
                 pin_if_back_within_s: float = PIN_IF_BACK_WITHIN_S) -> None:
        self.slots = [SlotState() for _ in range(num_slots)]
        self.pin_if_back_within_s = pin_if_back_within_s
        self.tool_times = tool_times
        self._clock = clock
        self.evictions = 0

    def holder(self, owner: str) -> int | None:
        return next((i for i, s in enumerate(self.slots) if s.owner == owner), None)

    def acquire(self, owner: str, prefer: int | None = None) -> tuple[int, str | None] | None:
        """A slot for owner: (slot, evicted owner or None), or None when every slot is held
        by a decoding sequence or one whose tool is expected back within the pin time (the
        caller queues and retries)."""
        if prefer is not None and self.slots[prefer].owner is None:
            return self._take(prefer, owner), None
        free = [i for i, s in enumerate(self.slots) if s.owner is None]
        if free:
            return self._take(min(free, key=lambda i: self.slots[i].last_used_at), owner), None
        waiting = [i for i, s in enumerate(self.slots) if s.waiting_tool
                   and self._expected_remaining_s(i) > self.pin_if_back_within_s]
        if not waiting:
            return None
        victim = max(waiting, key=self._expected_remaining_s)
        evicted = self.slots[victim].owner
        self.evictions += 1
        return self._take(victim, owner), evicted

    def _expected_remaining_s(self, index: int) -> float:
        s = self.slots[index]
        return self.tool_times.expected(s.waiting_tool) - (self._clock() - s.tool_started_at)

    def _take(self, index: int, owner: str) -> int:
        self.slots[index] = SlotState(owner=owner, last_used_at=self._clock())
        return index

    def waiting(self, index: int, tool: str) -> None:
        s = self.slots[index]
        s.waiting_tool, s.tool_started_at = tool, self._clock()

    def decoding(self, index: int) -> None:
        s = self.slots[index]
        s.waiting_tool, s.last_used_at = "", self._clock()

    def release(self, index: int) -> None:
        """The owner is done with the slot; its KV stays (a prefix cache) until reused."""
        self.slots[index].owner = None
        self.slots[index].waiting_tool = ""
        self.slots[index].last_used_at = self._clock()
