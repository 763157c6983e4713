"""Which sequences keep their KV while their tool runs, and which give it up, under a budget of
KV *tokens*.

The engine's KV is two resources: streams (the engine's sequences, one per trajectory in KV)
and a token budget (what the memory holds, as vLLM's and SGLang's block pools do). A stream is
free, held by a live sequence (charged its whole context: what is in KV plus what is about to
be prefilled, and each decoded token as it comes), or a prefix-cache entry: an ended request's
KV kept, charged its tokens, until the budget or a stream is needed (least recently used first).

When room is needed the order is: free tokens; prefix-cache entries, least recently used first
(what vLLM's automatic prefix caching evicts); then sequences waiting for a tool, the one whose
tool is expected back *last* first (expected remaining time from an EWMA of observed durations
per tool). A waiter expected back within `pin_if_back_within_s` keeps its KV for a newcomer
(re-prefilling it would cost more than waiting); only a decoding sequence that cannot otherwise
grow may take it (`force`). A decoding sequence's KV is never taken here: when even that is not
enough the rollout preempts a running sequence (recompute, vLLM's default).

`resubmit` turns every ended request into a prefix-cache entry (the baseline's automatic prefix
caching); `resident` keeps waiting sequences live. Both share this one budget and policy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

DEFAULT_TOOL_S = 2.0  # expected duration of a tool never seen before
EWMA_WEIGHT = 0.3
PIN_IF_BACK_WITHIN_S = 1.0  # a waiting sequence expected back sooner keeps its KV: the
# newcomer waits for room instead (re-prefilling the waiter would cost more)


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
class Stream:
    """One engine sequence: who holds it, what it is charged, and why it is held."""

    owner: str | None = None  # the live trajectory's id; None: free or a cache entry
    tokens: int = 0  # KV tokens charged to the budget
    cached_for: str | None = None  # a prefix-cache entry: the trajectory whose request ended
    cached: Sequence[int] = ()  # the entry's tokens, in order (kept, not copied)
    waiting_tool: str = ""  # the tool the owner waits for ("" while it runs)
    tool_started_at: float = 0.0
    last_used_at: float = 0.0

    @property
    def is_free(self) -> bool:
        return self.owner is None and self.cached_for is None


@dataclass
class Grant:
    """What acquire() gave: a stream, and what was evicted to make room."""

    stream: int
    evicted_owners: list[str]  # live waiters whose KV is gone (they re-prefill on return)
    dropped_streams: list[int]  # streams whose KV the engine must drop (entries and waiters)
    reuse: Sequence[int] = ()  # the owner's own cache entry's tokens


class Residency:
    """Stream and token bookkeeping; the engine's seq_id of a stream is its index."""

    def __init__(self, num_streams: int, tool_times: ToolTimes, budget_tokens: int,
                 clock: Callable[[], float] = time.monotonic,
                 pin_if_back_within_s: float = PIN_IF_BACK_WITHIN_S) -> None:
        if budget_tokens < 1:
            raise ValueError("the KV budget must be at least one token")
        self.streams = [Stream() for _ in range(num_streams)]
        self.budget_tokens = budget_tokens
        self.pin_if_back_within_s = pin_if_back_within_s
        self.tool_times = tool_times
        self._clock = clock
        self.evictions = 0  # waiters whose KV was taken
        self.cache_evictions = 0  # prefix-cache entries dropped for room
        self.peak_tokens = 0
        self._used = 0  # the sum of every stream's tokens, kept as streams change

    # -- reading -----------------------------------------------------------------------------

    def used_tokens(self) -> int:
        return self._used

    def free_tokens(self) -> int:
        return self.budget_tokens - self.used_tokens()

    def holder(self, owner: str) -> int | None:
        return next((i for i, s in enumerate(self.streams) if s.owner == owner), None)

    def entry_of(self, owner: str) -> int | None:
        """The stream holding owner's prefix-cache entry, if it survived."""
        return next((i for i, s in enumerate(self.streams) if s.cached_for == owner), None)

    def live(self) -> int:
        return sum(1 for s in self.streams if s.owner is not None)

    # -- taking room -------------------------------------------------------------------------

    def acquire(self, owner: str, need_tokens: int, headroom_tokens: int = 0) -> Grant | None:
        """A stream for owner charged need_tokens (its whole context), evicting what the
        policy allows so that headroom_tokens stay free besides (room for the running to
        grow: admitting into a full budget only forces a preemption a step later); None (and
        nothing changed) when the room cannot be made now: the caller queues and retries."""
        if need_tokens < 0 or headroom_tokens < 0:
            raise ValueError("need and headroom are token counts: 0 or more")
        if self.holder(owner) is not None:
            raise ValueError(f"{owner} already holds a stream")
        index = self._stream_for(owner)
        if index is None:
            return None
        victims = self._victims(need_tokens + headroom_tokens - self.streams[index].tokens,
                                exclude={index}, force=False)
        if victims is None:
            return None
        stream = self.streams[index]
        own = stream.cached_for == owner
        reuse = stream.cached if own else ()
        taken = [] if stream.is_free or own else [index]  # another's entry or a waiter
        evicted, dropped = self._evict(taken + victims)
        self._set(index, Stream(owner=owner, tokens=need_tokens, last_used_at=self._clock()))
        self._note_peak()
        return Grant(index, evicted, dropped, reuse)

    def grow(self, index: int, tokens: int, force: bool = False
             ) -> tuple[list[str], list[int]] | None:
        """Charge a live stream `tokens` more (decoded tokens, a tool's output), evicting what
        the policy allows (`force`: pinned waiters too). Returns (evicted owners, streams to
        drop), or None with nothing changed when there is no room."""
        if tokens < 0:
            raise ValueError("grow takes 0 or more tokens (release gives KV back)")
        victims = self._victims(tokens, exclude={index}, force=force)
        if victims is None:
            return None
        evicted = self._evict(victims)
        self.streams[index].tokens += tokens
        self._used += tokens
        self._note_peak()
        return evicted

    def _stream_for(self, owner: str) -> int | None:
        """Its own cache entry; else the least recently used free stream; else the least
        recently used entry; else the waiter expected back last (unpinned)."""
        own = self.entry_of(owner)
        if own is not None:
            return own
        free = [i for i, s in enumerate(self.streams) if s.is_free]
        if free:
            return min(free, key=lambda i: self.streams[i].last_used_at)
        entries = [i for i, s in enumerate(self.streams) if s.cached_for is not None]
        if entries:
            return min(entries, key=lambda i: self.streams[i].last_used_at)
        waiting = self._evictable_waiters(force=False, exclude=set())
        return waiting[0] if waiting else None

    def _victims(self, need: int, exclude: set[int], force: bool) -> list[int] | None:
        """Streams to evict so that `need` more tokens fit, in policy order; None if even all
        of them would not do."""
        room = self.free_tokens()
        if need <= room:
            return []
        chosen: list[int] = []
        entries = sorted((i for i, s in enumerate(self.streams)
                          if s.cached_for is not None and i not in exclude),
                         key=lambda i: self.streams[i].last_used_at)
        for i in entries + self._evictable_waiters(force, exclude):
            chosen.append(i)
            room += self.streams[i].tokens
            if need <= room:
                return chosen
        return None

    def _evictable_waiters(self, force: bool, exclude: set[int]) -> list[int]:
        waiting = [i for i, s in enumerate(self.streams) if s.waiting_tool and
                   i not in exclude and
                   (force or self._expected_remaining_s(i) > self.pin_if_back_within_s)]
        return sorted(waiting, key=self._expected_remaining_s, reverse=True)

    def _evict(self, victims: list[int]) -> tuple[list[str], list[int]]:
        owners: list[str] = []
        for i in victims:
            s = self.streams[i]
            if s.owner is not None:
                owners.append(s.owner)
                self.evictions += 1
            else:
                self.cache_evictions += 1
            self._set(i, Stream(last_used_at=self._clock()))
        return owners, list(victims)

    def _expected_remaining_s(self, index: int) -> float:
        s = self.streams[index]
        return self.tool_times.expected(s.waiting_tool) - (self._clock() - s.tool_started_at)

    def _set(self, index: int, stream: Stream) -> None:
        self._used += stream.tokens - self.streams[index].tokens
        self.streams[index] = stream

    def _note_peak(self) -> None:
        self.peak_tokens = max(self.peak_tokens, self._used)

    # -- a holder's life ---------------------------------------------------------------------

    def waiting(self, index: int, tool: str) -> None:
        s = self.streams[index]
        s.waiting_tool, s.tool_started_at = tool, self._clock()

    def running(self, index: int) -> None:
        s = self.streams[index]
        s.waiting_tool, s.last_used_at = "", self._clock()

    def release(self, index: int) -> None:
        """The owner is done with the stream: its KV and its charge go."""
        self._set(index, Stream(last_used_at=self._clock()))

    def keep_as_cache(self, index: int, owner: str, tokens: Sequence[int]) -> None:
        """An ended request's KV stays as a prefix-cache entry, charged its tokens, until the
        room or the stream is needed. It holds at most what the request was charged."""
        if len(tokens) > self.streams[index].tokens:
            raise ValueError(f"an entry of {len(tokens)} tokens on a stream charged "
                             f"{self.streams[index].tokens}")
        self._set(index, Stream(tokens=len(tokens), cached_for=owner, cached=tokens,
                                last_used_at=self._clock()))
