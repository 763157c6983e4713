"""Per-client quotas: a call rate (token bucket) and a cap on calls in flight.

A training job that floods the service is told to wait, with the wait in the answer
(RESOURCE_EXHAUSTED, trailing metadata `retry-delay-ms`), instead of queueing without bound or
starving the other jobs on the node. `clock` is injectable so tests need not sleep.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

INFLIGHT_RETRY_S = 0.5  # a cap on calls in flight frees up when one ends: retry soon


@dataclass(frozen=True)
class QuotaConfig:
    rate_per_s: float = 0.0  # calls started per second per client; 0: unlimited
    burst: int = 0  # calls that may start at once above the rate (default: one second's worth)
    max_inflight: int = 0  # calls in flight per client; 0: unlimited

    @property
    def enabled(self) -> bool:
        return self.rate_per_s > 0 or self.max_inflight > 0


@dataclass
class _Bucket:
    tokens: float
    stamp: float
    inflight: int = 0


class Quotas:
    """Thread-safe; `admit` returns 0.0 (go) or the seconds to wait before retrying."""

    def __init__(self, config: QuotaConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, _Bucket] = {}
        self._capacity = float(config.burst or max(1, round(config.rate_per_s)))

    def admit(self, client: str) -> float:
        if not self.config.enabled:
            return 0.0
        with self._lock:
            now = self._clock()
            b = self._buckets.setdefault(client, _Bucket(self._capacity, now))
            if self.config.rate_per_s > 0:
                b.tokens = min(self._capacity, b.tokens + (now - b.stamp) * self.config.rate_per_s)
                b.stamp = now
            if self.config.max_inflight and b.inflight >= self.config.max_inflight:
                return INFLIGHT_RETRY_S
            if self.config.rate_per_s > 0:
                if b.tokens < 1.0:
                    return (1.0 - b.tokens) / self.config.rate_per_s
                b.tokens -= 1.0
            b.inflight += 1
            return 0.0

    def release(self, client: str) -> None:
        if not self.config.enabled:
            return
        with self._lock:
            bucket = self._buckets.get(client)
            if bucket is not None and bucket.inflight > 0:
                bucket.inflight -= 1

    def inflight(self, client: str) -> int:
        with self._lock:
            bucket = self._buckets.get(client)
            return bucket.inflight if bucket else 0
