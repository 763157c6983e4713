"""Timing on a GPU: per-call CUDA events in each side, checked by the tool's own clock.

CUDA events time work only in their own process, so per-call times come from the side; the
timer is bound before the submission's module loads, and the tool's clock times every batch
from its side of the pipe and must agree with the reported events (work left on a side stream,
or forged timings, show up as a gap). The L2 is flushed (a buffer twice its size) and the
device synchronised before and after each call; clocks, temperature and throttling are read
through NVML; batches of the two sides alternate and the order flips every round; the
submission is frozen (every host thread stopped) while the reference is timed; a random share
of timed outputs is verified.

Known limit, stated in the report (`trust: "gpu-events"`): unlike the CPU path, the timed
outputs are read back through the submission's process (the "last" command), and GPU work it
queued before being frozen keeps running; the tool's clock gap bounds what that can hide.
"""

from __future__ import annotations

import math
import secrets
import statistics
import time
from typing import Any

from perfbox.tools import gpu_timing
from perfbox.tools.harness import compare, estimates, session, wire
from perfbox.tools.harness.problems import Problem
from perfbox.tools.harness.session import Sides
from perfbox.tools.types import Status, ToolOutcome

POOL_SIZE = 4  # input sets the timed calls draw from
BATCH_TARGET_US = 10_000.0  # a timed batch of calls lasts about this long
GPU_MIN_TIME_S = 0.5  # sample at least this long before the stop rule applies (NVBench)
MAX_BATCH = 200
VERIFY_ONE_IN = 4  # after a batch, the last timed output is checked with this odds
GAP_SLACK_US = 30.0  # tool-clock time per call beyond the events, over the reference's


def _timed_batch(conn: Any, indices: bytes) -> tuple[list[tuple[float, float]], float]:
    """The side's (event us, host us) per call and the tool's clock for the whole batch."""
    start = time.perf_counter_ns()
    reply = wire.ask(conn, b"timed:" + indices)
    tool_us = (time.perf_counter_ns() - start) / 1e3
    try:
        pairs = gpu_timing.unpack_times(reply)
    except ValueError as e:
        raise wire.SideFailed("answered a timed batch with something other than times") from e
    if len(pairs) != len(indices) or not all(math.isfinite(x) and x >= 0
                                             for pair in pairs for x in pair):
        raise wire.SideFailed("answered a timed batch with malformed times")
    return pairs, tool_us


def bench(problem: Problem, sides: Sides, options: dict[str, Any], report: dict[str, Any]
          ) -> ToolOutcome:
    assert sides.reference is not None
    tol_for = compare.tolerances(options)
    conns = {"submission": sides.submission.conn, "reference": sides.reference.conn}
    case = (problem.benchmarks or problem.cases or [None])[0]
    pool = [problem.draw(case=case) for _ in range(POOL_SIZE)]
    for conn in conns.values():
        wire.ask(conn, b"pool:" + wire.dumps(pool))
    for j, args in enumerate(pool):
        got = wire.loads(wire.ask(conns["submission"], b"out:%d" % j))
        _, wrong = problem.judge(args, got, tol_for, j)
        if wrong:
            return session.outcome(Status.WRONG_ANSWER, f"not timed: {wrong}", report)
    flush_bytes = int(wire.ask(conns["reference"], b"flush_bytes"))
    monitor = gpu_timing.GpuMonitor()
    try:
        return _sample(problem, sides, conns, pool, options, tol_for, monitor, flush_bytes,
                       report)
    finally:
        monitor.close()


def _sample(problem: Problem, sides: Sides, conns: dict[str, Any], pool: list[list[Any]],
            options: dict[str, Any], tol_for: dict[str, float], monitor: Any,
            flush_bytes: int, report: dict[str, Any]) -> ToolOutcome:
    monitor.sample()
    host = []
    for conn in conns.values():
        pairs, _ = _timed_batch(conn, bytes(3))
        host += [h for _, h in pairs]
    batch = max(1, min(MAX_BATCH, round(BATCH_TARGET_US / max(statistics.median(host), 1.0))))
    events: dict[str, list[float]] = {n: [] for n in conns}
    gaps: dict[str, list[float]] = {n: [] for n in conns}
    ratios: list[float] = []
    verified = 0
    started = time.monotonic()
    converged = False
    for round_no in range(1_000_000):
        order = list(conns) if round_no % 2 == 0 else list(reversed(conns))
        medians = {}
        for name in order:
            indices = bytes(secrets.randbelow(len(pool)) for _ in range(batch))
            if name == "reference":
                sides.submission.freeze()
            try:
                pairs, tool_us = _timed_batch(conns[name], indices)
            finally:
                if name == "reference":
                    sides.submission.thaw()
            events[name] += [e for e, _ in pairs]
            medians[name] = statistics.median(e for e, _ in pairs)
            gaps[name].append((tool_us - sum(e for e, _ in pairs)) / batch)
            if name == "submission" and (round_no == 0 or
                                         secrets.randbelow(VERIFY_ONE_IN) == 0):
                got = wire.loads(wire.ask(conns["submission"], b"last"))
                _, wrong = problem.judge(pool[indices[-1]], got, tol_for, indices[-1])
                if wrong:
                    return session.outcome(Status.WRONG_ANSWER, "a timed call returned a wrong "
                                           f"output (cached or stale result?): {wrong}", report)
                verified += 1
        ratios.append(medians["reference"] / max(medians["submission"], 1e-9))
        monitor.sample()
        stats = {n: estimates.timing_stats([e / 1e6 for e in v]) for n, v in events.items()}
        elapsed = time.monotonic() - started
        enough = len(ratios) >= int(options["min_samples"]) and \
            elapsed >= min(GPU_MIN_TIME_S, float(options["time_budget_s"]))
        if enough and all(s["rel_error"] < float(options["target_rel_error"])
                          for s in stats.values()):
            converged = True
            break
        if enough and elapsed > float(options["time_budget_s"]):
            break
    gap = {n: statistics.median(v) for n, v in gaps.items()}
    median_sub = stats["submission"]["median_us"]
    if gap["submission"] - gap["reference"] > max(0.5 * median_sub, GAP_SLACK_US):
        return session.outcome(Status.RUNTIME_ERROR, "work outside the timed region: the CUDA "
                               f"events saw {median_sub:.1f} us per call but the device stayed "
                               f"busy (or the reply was held) "
                               f"{gap['submission'] - gap['reference']:.1f} us longer per call "
                               "than for the reference (work left on a side stream or thread, "
                               "or forged timings)", report)
    speedup = stats["reference"]["median_us"] / median_sub
    lo, hi = estimates.median_ci(ratios)
    conditions = monitor.conditions
    flags = [] if converged else ["noisy"]
    if conditions.throttled:
        flags.append("throttled")
    report.update({"submission": stats["submission"], "reference": stats["reference"],
                   "speedup": speedup, "speedup_ci_low": lo, "speedup_ci_high": hi,
                   "device": "cuda", "clock": "cuda-events", "converged": converged,
                   "budget_used_s": time.monotonic() - started, "gpu": conditions.to_json(),
                   "l2_flush_bytes": flush_bytes, "verified_outputs": verified,
                   "tool_gap_us": gap["submission"], "reference_gap_us": gap["reference"],
                   "num_rounds": len(ratios), "measurement_flags": flags})
    ceiling = float(options["max_plausible_speedup"])
    if speedup > ceiling:
        report["measurement_flags"] = flags + ["implausible"]
        return session.outcome(Status.IMPLAUSIBLE, f"a speedup of {speedup:.0f}x is above the "
                               f"plausible ceiling of {ceiling:g}x; not rewarded", report)
    summary = (f"{speedup:.2f}x the reference (95% interval {lo:.2f}-{hi:.2f}): "
               f"{median_sub:.2f} us vs {stats['reference']['median_us']:.2f} us per call "
               f"(median of {stats['submission']['num_samples']} CUDA-event-timed calls, L2 "
               f"flushed before each; rel. error {100 * stats['submission']['rel_error']:.2f}%).")
    if flags:
        summary += f" Measurement flags: {', '.join(flags)}."
    if conditions.throttled:
        summary += (" Warning: the GPU was throttled while timing ("
                    f"{', '.join(conditions.throttle_reasons)}); treat the figures with care.")
    return ToolOutcome(Status.OK, summary, report)
