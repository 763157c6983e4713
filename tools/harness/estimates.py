"""Estimates from timing samples: per-side statistics, the speedup and its interval.

Kept apart from how samples are taken (`cpu_sampling`, `cuda_sampling`), so both paths report
the same figures the same way.
"""

from __future__ import annotations

import math
import statistics
from typing import Any


def timing_stats(samples_s: list[float], calls_per_sample: int = 1) -> dict[str, Any]:
    """A TimingStats (proto-JSON) of per-call times in seconds."""
    n = len(samples_s)
    quartiles = statistics.quantiles(samples_s, n=4) if n >= 2 else [samples_s[0]] * 3
    mean = statistics.fmean(samples_s)
    stderr = statistics.stdev(samples_s) / math.sqrt(n) if n > 1 else mean
    return {"median_us": statistics.median(samples_s) * 1e6, "mean_us": mean * 1e6,
            "min_us": min(samples_s) * 1e6, "iqr_us": (quartiles[2] - quartiles[0]) * 1e6,
            "rel_error": stderr / mean if mean else 0.0, "num_samples": n,
            "calls_per_sample": calls_per_sample}


def geomean(values: list[float]) -> float:
    return math.exp(statistics.fmean(math.log(max(v, 1e-300)) for v in values))


def median_ci(values: list[float], z: float = 1.96) -> tuple[float, float]:
    """Distribution-free ~95% confidence interval of the median (order statistics)."""
    ordered = sorted(values)
    n = len(ordered)
    if n < 3:
        return ordered[0], ordered[-1]
    half = z * math.sqrt(n) / 2
    lo = max(0, math.floor(n / 2 - half) - 1)
    hi = min(n - 1, math.ceil(n / 2 + half))
    return ordered[lo], ordered[hi]


def speedup_interval(raw: dict[str, list[float]], overhead_s: float, resamples: int = 200
                     ) -> tuple[float, tuple[float, float]]:
    """Median reference time over median submission time (net of the round trip), and a ~95%
    bootstrap interval that resamples whole rounds (a round's two calls stay paired, so load
    that hit both stays together)."""
    import random

    sub = [max(x - overhead_s, 1e-9) for x in raw["submission"]]
    ref = [max(x - overhead_s, 1e-9) for x in raw["reference"]]
    n = min(len(sub), len(ref))
    point = statistics.median(ref[:n]) / statistics.median(sub[:n])
    rng = random.Random(n)  # the interval is not a secret: reproducible per sample count
    estimates = []
    for _ in range(resamples):
        picks = [rng.randrange(n) for _ in range(n)]
        estimates.append(statistics.median(ref[i] for i in picks) /
                         statistics.median(sub[i] for i in picks))
    estimates.sort()
    return point, (estimates[int(0.025 * resamples)], estimates[int(0.975 * resamples) - 1])
