"""The tool cache: futures of tool calls launched before the model commits to them, keyed by
canonical call (tool name + sorted, normalised arguments).

A speculative launch stores its future here under the call's key, with a keep-alive after
which an unclaimed entry is dropped (and its tool time counted as wasted). When the main model
emits a call, `claim` returns the future on an exact key match (a hit) or None (a miss: the
caller runs the tool itself). `Put` also accepts finished outputs from outside (the paper's
endpoint), so a client-side draft can fill the cache of an engine-side worker.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable

DEFAULT_KEEP_ALIVE_S = 120.0
MAX_KEEP_ALIVE_S = 3600.0
DEFAULT_MAX_PUT_BYTES = 256 << 20  # Put outputs held at once, all clients together


class CacheFull(RuntimeError):
    """A Put would hold more output bytes than the cache allows."""


def owned_key(response_id: str, key: str) -> str:
    """Where a Put for response_id is stored: unowned Puts (no response id) under the call's
    key, as speculative launches are; owned ones apart, per owner."""
    return f"put:{response_id}\n{key}" if response_id else key


@dataclass
class CacheStats:
    """Counts since the cache was made."""

    hits: int = 0  # claims served by a speculative or put entry
    misses: int = 0  # claims with no entry: the tool ran on the critical path
    launched: int = 0  # speculative launches (deduplicated)
    deduplicated: int = 0  # launches that found the same key already in flight or done
    expired: int = 0  # entries dropped unclaimed
    wasted_tool_s: float = 0.0  # tool seconds spent on entries never claimed


@dataclass
class _Entry:
    future: Future[Any]
    expires_at: float
    response_id: str = ""
    claimed: bool = False
    started_at: float = field(default_factory=time.monotonic)
    size: int = 0  # bytes of a Put output (counted against max_put_bytes)
    finished_at: float | None = None


class ToolCache:
    """Thread-safe; `clock` is injectable so keep-alive expiry is testable without sleeping."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 max_put_bytes: int = DEFAULT_MAX_PUT_BYTES) -> None:
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._clock = clock
        self.stats = CacheStats()
        self.max_put_bytes = max_put_bytes
        self._put_bytes = 0

    def launch(self, key: str, run: Callable[[], Any], submit: Callable[..., Future[Any]],
               keep_alive_s: float = DEFAULT_KEEP_ALIVE_S, response_id: str = "") -> bool:
        """Starts `run` through `submit` (an executor's submit) unless the key is already
        cached; True when it started. Dedup: the samples of a group share one launch."""
        with self._lock:
            self._expire_locked()
            if key in self._entries:
                self.stats.deduplicated += 1
                return False
            entry = _Entry(Future(), self._clock() + keep_alive_s, response_id)
            self._entries[key] = entry
            self.stats.launched += 1
        inner = submit(run)
        inner.add_done_callback(lambda f: self._finish(entry, f))
        return True

    def _finish(self, entry: _Entry, inner: Future[Any]) -> None:
        entry.finished_at = time.monotonic()
        if entry.future.done():  # dropped (cancelled) while the tool ran
            return
        if inner.cancelled():
            entry.future.cancel()
        elif inner.exception() is not None:
            entry.future.set_exception(inner.exception())  # type: ignore[arg-type]
        else:
            entry.future.set_result(inner.result())

    def put(self, response_id: str, key: str, output: Any,
            keep_alive_s: float = DEFAULT_KEEP_ALIVE_S) -> bool:
        """A finished output from outside, stored under owned_key(response_id, key): only a
        claim naming that response id finds it, so one client's Put can neither answer nor
        block another's call. False when that owner already has the key; CacheFull past
        max_put_bytes of Put outputs."""
        size = len(output.encode()) if isinstance(output, str) else 0
        stored = owned_key(response_id, key)
        with self._lock:
            self._expire_locked()
            if stored in self._entries:
                return False
            if self._put_bytes + size > self.max_put_bytes:
                raise CacheFull(f"the tool cache holds {self._put_bytes} bytes of Put outputs "
                                f"of at most {self.max_put_bytes}")
            future: Future[Any] = Future()
            future.set_result(output)
            entry = _Entry(future, self._clock() + keep_alive_s, response_id, size=size)
            entry.finished_at = entry.started_at
            self._entries[stored] = entry
            self._put_bytes += size
            return True

    def claim(self, key: str, count_miss: bool = True,
              owners: tuple[str, ...] | None = None) -> Future[Any] | None:
        """The future for this exact call (a hit), or None (a miss; not counted when
        count_miss is False, for a second try after a counted one). With owners, only an
        entry Put or launched for one of those response ids matches."""
        with self._lock:
            self._expire_locked()
            entry = self._entries.get(key)
            if (entry is None or entry.future.cancelled()
                    or (owners is not None and entry.response_id not in owners)):
                if count_miss:
                    self.stats.misses += 1
                return None
            entry.claimed = True
            self.stats.hits += 1
            return entry.future

    def lookup(self, key: str) -> Future[Any] | None:
        """Like claim without counting: for an engine peeking at the cache."""
        with self._lock:
            entry = self._entries.get(key)
            return None if entry is None else entry.future

    def cancel_unclaimed(self, keep: Callable[[str], bool] = lambda key: False,
                         owners: set[str] | None = None) -> int:
        """Drops unclaimed entries the caller no longer expects to match (with owners: only
        those launched or Put for one of these response ids, so a shared cache keeps other
        callers' entries); running ones are cancelled where the executor allows. Their tool
        time is counted as wasted."""
        with self._lock:
            doomed = [k for k, e in self._entries.items() if not e.claimed and not keep(k)
                      and (owners is None or e.response_id in owners)]
            for key in doomed:
                self._drop_locked(key)
            return len(doomed)

    def _expire_locked(self) -> None:
        now = self._clock()
        for key in [k for k, e in self._entries.items() if e.expires_at <= now]:
            if not self._entries[key].claimed:
                self.stats.expired += 1
            self._drop_locked(key)

    def _drop_locked(self, key: str) -> None:
        entry = self._entries.pop(key)
        self._put_bytes -= entry.size
        if entry.claimed:
            return
        entry.future.cancel()
        end = entry.finished_at if entry.finished_at is not None else time.monotonic()
        self.stats.wasted_tool_s += max(0.0, end - entry.started_at)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
