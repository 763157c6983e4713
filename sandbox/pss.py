"""A job's PSS kept current by walking a few processes' page tables per poll.

Walking every process's page tables (/proc/PID/smaps_rollup) at once costs seconds for a job of
a hundred processes sharing a large heap, and longer when the job keeps the CPUs busy: one such
walk stalled the worker past its heartbeat. So each process is sampled on its own, the stalest
and most-grown first, within a per-poll time budget and a running share of the worker's time
(`max_share`: a job may not buy itself the supervisor's core by forking), and the estimate
between samples is each process's last PSS plus whatever its RSS grew since: pages a process
maps after its sample are new memory (anonymous pages it allocated, file or shared pages it
faulted in), so a burst counts at the next poll, not one round of walks later.

A process never sampled counts its whole RSS but makes the verdict unsure: "over" is given only
once every process has a sample, so a freshly forked child's inherited copy-on-write pages
(all in its RSS, hardly any in its PSS) never kill an honest job. What stays between samples:
pages a process turns private by writing shared copy-on-write pages (its RSS does not change);
they count at its next sample, one round of the walk later.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class _Sample:
    pss: int  # bytes, when sampled
    rss: int  # bytes of RSS at that moment
    at: float  # monotonic time of the sample


@dataclass
class PssEstimate:
    """Call `over(limit, rss_by_pid, outside)` at each poll where RSS says "over"."""

    pss_of: Callable[[int], int]  # walks one process's page tables
    max_share: float = 0.1  # of the worker's time spent walking, at most, over the job
    poll_budget_s: float = 0.02  # walking per poll, at most (one process always)
    walks: int = 0  # processes sampled so far
    walk_s: float = 0.0  # seconds spent walking so far
    _started: float = field(default_factory=time.monotonic)
    _samples: dict[int, _Sample] = field(default_factory=dict)

    def over(self, limit: int, rss: dict[int, int], outside: int) -> bool:
        for pid in [p for p in self._samples if p not in rss]:
            del self._samples[pid]  # gone: it holds nothing
        self._walk(rss)
        estimate = outside + sum(self._estimate(pid, r) for pid, r in rss.items())
        return estimate > limit and all(pid in self._samples for pid in rss)

    def _estimate(self, pid: int, rss: int) -> int:
        sample = self._samples.get(pid)
        if sample is None:
            return rss
        return sample.pss + max(0, rss - sample.rss)

    def _order(self, rss: dict[int, int]) -> list[int]:
        """Never sampled first (largest RSS first), then the most grown since their sample,
        then the stalest samples."""
        new = sorted((p for p in rss if p not in self._samples), key=lambda p: -rss[p])
        old = sorted((p for p in rss if p in self._samples),
                     key=lambda p: (-(rss[p] - self._samples[p].rss), self._samples[p].at))
        return new + old

    def _walk(self, rss: dict[int, int]) -> None:
        poll_started = time.monotonic()
        allowed = self.max_share * (poll_started - self._started) - self.walk_s
        for count, pid in enumerate(self._order(rss)):
            spent = time.monotonic() - poll_started
            if count and (spent >= self.poll_budget_s or spent >= allowed):
                break
            if not count and allowed < 0:
                break  # over its share: this poll walks nothing
            started = time.monotonic()
            pss = self.pss_of(pid)
            self._samples[pid] = _Sample(pss, rss[pid], started)
            self.walks += 1
            self.walk_s += time.monotonic() - started
