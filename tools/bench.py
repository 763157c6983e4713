"""The bench tool: how fast is a submission against the reference, by a clock it cannot reach?

KernelBench (`ModelNew` or a bare CUDA kernel against `Model`) or a GPU MODE task (its
`benchmarks` cases, else its tests; the speedup is the geometric mean over cases, as GPU MODE
ranks). The harness forks both sides, confines the submission, and times them on the tool's
side of the pipe (`harness.cpu_sampling`; `harness.cuda_sampling` on a GPU). This module checks
the submission before timing (a wrong kernel is never timed) and turns the samples into an
outcome a reward can trust or refuse:

- IMPLAUSIBLE when a per-call time is below what writing the outputs takes on this machine,
  or the speedup is above `max_plausible_speedup` (1000 by default), with the evidence;
- measurement flags a reward can refuse beside OK: `noisy` (the speedup's interval is wider
  than the target), `contended` (other processes took over 10% of the measuring CPUs),
  `steal` (the hypervisor took over 5%);
- the source's static flags (`hack_policy` "reject" makes them REJECTED).
"""

from __future__ import annotations

import math
import os
import statistics
import time
from typing import Any

from perfbox.tools.harness import (compare, confine, cpu_sampling, estimates, host_load,
                                   inputs, problems, proctree, request_policy, session,
                                   wire)
from perfbox.tools.harness.problems import Problem
from perfbox.tools.harness.session import Sides
from perfbox.tools.types import Status, ToolInputError, ToolOutcome, ToolRequest

LANGUAGES = ("kernelbench",)
DEFAULTS = {"target_rel_error": 0.01, "time_budget_s": 5.0, "min_samples": 10,
            "threads": 1, "max_plausible_speedup": 1000.0}
MAX_MIN_SAMPLES = 10_000
MIN_TARGET_REL_ERROR = 1e-4  # below timing noise: the loop would always spend its whole budget
MIN_TIME_BUDGET_S = 0.1
MAX_TIME_BUDGET_S = 600.0
MAX_PLAUSIBLE_SPEEDUP = 1e6  # infinity would turn the plausibility check off
PRECHECK_SETS = 2  # input sets compared before anything is timed
FLOOR_SAFETY = 0.5  # a per-call time below this share of one output write is implausible
CONTENDED_FRACTION = 0.10
PAGE_BYTES = 4096
STEAL_FRACTION = 0.05


def validate(language: str, files: list[str], options: dict[str, Any]) -> None:
    if language not in LANGUAGES:
        raise ToolInputError(f"bench takes language kernelbench; got {language or 'none'}")
    problems.names(files, options)
    _validate_stop_rule(options)
    threads = int(options.get("threads") or 1)
    if not 1 <= threads <= len(os.sched_getaffinity(0)):
        raise ToolInputError(f"threads must be 1..{len(os.sched_getaffinity(0))} (the CPUs "
                             f"this node gives a job), got {threads}")
    speedup = float(options.get("max_plausible_speedup") or DEFAULTS["max_plausible_speedup"])
    if not 1 < speedup <= MAX_PLAUSIBLE_SPEEDUP:
        raise ToolInputError(f"max_plausible_speedup must be above 1 and at most "
                             f"{MAX_PLAUSIBLE_SPEEDUP:g} (0 for the default 1000), got "
                             f"{speedup}")
    request_policy.validate_common(options)


def _validate_stop_rule(options: dict[str, Any]) -> None:
    """The sampling loop's stop rule: a target below the noise floor or a budget of
    microseconds would only spend (or skip) the whole budget; NaN would never compare."""
    target = float(options.get("target_rel_error") or DEFAULTS["target_rel_error"])
    if not MIN_TARGET_REL_ERROR <= target < 1:
        raise ToolInputError(f"target_rel_error must be in [{MIN_TARGET_REL_ERROR:g}, 1) (0 "
                             f"for the default 0.01), got {target}")
    budget = float(options.get("time_budget_s") or DEFAULTS["time_budget_s"])
    if not MIN_TIME_BUDGET_S <= budget <= MAX_TIME_BUDGET_S:
        raise ToolInputError(f"time_budget_s must be in [{MIN_TIME_BUDGET_S:g}, "
                             f"{MAX_TIME_BUDGET_S:g}] seconds (0 for the default 5), got "
                             f"{budget}")
    samples = int(options.get("min_samples") or 0)
    if not 0 <= samples <= MAX_MIN_SAMPLES:
        raise ToolInputError(f"min_samples must be 1..{MAX_MIN_SAMPLES} (0 for the default "
                             f"10), got {samples}")


def normalize(options: dict[str, Any]) -> dict[str, Any]:
    return dict(options)


def run(request: ToolRequest) -> ToolOutcome:
    options = {**DEFAULTS, **{k: v for k, v in request.options.items() if v}}
    device, refusal = request_policy.choose_device("bench", options)
    if refusal is not None:
        return refusal
    problem = problems.load(request.files, request.workdir, options, device)
    found = request_policy.source_flags(problem, options)
    report: dict[str, Any] = {"device": device, "flags": [f.to_json() for f in found]}
    refusal = request_policy.flag_refusal(found, options, report)
    if refusal is not None:
        return refusal
    placement = confine.choose_placement(int(options["threads"]))
    try:
        with session.start(problem, placement, "bench", True, report) as sides:
            if device == "cuda":
                from perfbox.tools.harness import cuda_sampling

                return cuda_sampling.bench(problem, sides, options, report)
            return _bench_cpu(problem, sides, options, placement, report)
    except session.Refused as e:
        return e.outcome
    except wire.SideFailed as e:
        return session.outcome(Status.RUNTIME_ERROR, f"a benchmarked side failed: {e}", report)
    except proctree.FreezeFailed as e:  # only the submission's processes can do this
        return session.outcome(Status.RUNTIME_ERROR, f"the submission's processes could not be "
                               f"frozen between calls ({e}: stuck in the kernel, e.g. in "
                               "vfork); its figures cannot be trusted", report)


def _precheck(problem: Problem, sides: Sides, case: dict[str, Any] | None,
              tol_for: dict[str, float]) -> tuple[list[Any], list[Any], str]:
    """(args, expected, "") of an input set of the problem's distribution, or why the
    submission is wrong on one of the problem's and (KernelBench, unless opted out) one varied
    input set: a kernel that is only right on the problem's inputs is not timed either."""
    first: tuple[list[Any], list[Any]] = ([], [])
    plan = [inputs.PROBLEM] * PRECHECK_SETS
    if case is None and inputs.VARIED in inputs.distributions(problem.options):
        plan.append(inputs.VARIED)
    for set_index, distribution in enumerate(plan):
        args = problem.draw(distribution, case)
        expected = problem.expected(args)
        if distribution == inputs.VARIED and not request_policy.all_finite(expected):
            break  # the reference cannot take varied inputs: the problem's own only
        if set_index == 0:
            first = (args, expected)
        message = b"check:" + wire.dumps(args)
        if sides.reference is not None:  # the same history in both sides' allocators
            wire.ask(sides.reference.conn, message)
        sides.submission.conn.send_bytes(message)
        runs, why = wire.receive(sides.submission.conn, 2 * _bytes(expected) + (1 << 20))
        if runs is None:
            raise wire.SideFailed(why)
        if not (isinstance(runs, list) and runs and isinstance(runs[0], list)):
            raise wire.SideFailed("answered something other than its outputs")
        _, wrong = problem.judge(args, runs[0], tol_for, set_index, expected)
        if wrong:
            return args, expected, f"{wrong} ({distribution} inputs)"
    return first[0], first[1], ""


def _bytes(values: list[Any]) -> int:
    import torch

    return sum(8 * t.numel() for t in values if isinstance(t, torch.Tensor))


def _cases(problem: Problem) -> list[dict[str, Any] | None]:
    if problem.format == problems.GPUMODE:
        return list(problem.benchmarks or problem.cases)
    return [None]


def _bench_cpu(problem: Problem, sides: Sides, options: dict[str, Any],
               placement: confine.Placement, report: dict[str, Any]) -> ToolOutcome:
    tol_for = compare.tolerances(options)
    cases = _cases(problem)
    per_case_options = {**options, "time_budget_s": float(options["time_budget_s"]) / len(cases)}
    import torch

    tool_affinity, tool_threads = os.sched_getaffinity(0), torch.get_num_threads()
    results: list[cpu_sampling.Sampling] = []
    load = host_load.Watch(placement.cpus, list(sides.as_dict().values()))
    try:
        # the clock holder wakes where the sides run (no migration on the reply), with no more
        # torch threads than those CPUs (more would spin against each other)
        os.sched_setaffinity(0, placement.cpus)
        torch.set_num_threads(placement.threads)
        for case in cases:
            args, expected, wrong = _precheck(problem, sides, case, tol_for)
            if wrong:
                return session.outcome(Status.WRONG_ANSWER, f"not timed: {wrong}", report)
            bench = cpu_sampling.Bench(problem, sides.as_dict(), args, expected)
            bench.tol_for, bench.case = tol_for, case
            try:
                results.append(cpu_sampling.run(bench, per_case_options))
            except cpu_sampling.TimedWrong as e:
                return session.outcome(Status.WRONG_ANSWER, str(e), report)
            finally:
                bench.close()
            for side in sides.as_dict().values():
                side.thaw()  # the next case's pre-check talks to them
        conditions = load.finish()
        floor_s = _write_floor_s(results[0].output_bytes)
    finally:
        os.sched_setaffinity(0, tool_affinity)
        torch.set_num_threads(tool_threads)
    report["floor_us"] = floor_s * 1e6
    return _cpu_outcome(results, options, placement, conditions, report)


def _cpu_outcome(results: list[cpu_sampling.Sampling], options: dict[str, Any],
                 placement: confine.Placement, conditions: dict[str, Any],
                 report: dict[str, Any]) -> ToolOutcome:
    main = results[0]
    speedup = estimates.geomean([r.speedup for r in results])
    ci_low = estimates.geomean([r.interval[0] for r in results])
    ci_high = estimates.geomean([r.interval[1] for r in results])
    stats = {name: estimates.timing_stats(main.sides[name].wall_s) for name in main.sides}
    cpu_us = {name: 1e6 * statistics.median(main.sides[name].cpu_s) for name in main.sides}
    converged = all(r.converged for r in results)
    flags = [] if converged else ["noisy"]
    faults = {name: statistics.median(main.sides[name].faults) for name in main.sides}
    if _output_reused(main.output_bytes, faults):
        flags.append("output_reused")
    if conditions["contention"] > CONTENDED_FRACTION:
        flags.append("contended")
    if conditions["steal_fraction"] > STEAL_FRACTION:
        flags.append("steal")
    report.update({
        "submission": stats["submission"], "reference": stats["reference"],
        "speedup": speedup, "speedup_ci_low": ci_low, "speedup_ci_high": ci_high,
        "device": "cpu", "clock": "monotonic", "converged": converged,
        "budget_used_s": sum(r.elapsed_s for r in results),
        "verified_outputs": sum(r.verified_outputs for r in results),
        "num_rounds": sum(len(r.sides["submission"].wall_s) for r in results),
        "submission_cpu_us": cpu_us["submission"], "reference_cpu_us": cpu_us["reference"],
        "threads": placement.threads, "cpus": list(placement.cpus),
        "round_trip_us": main.overhead_s * 1e6, "host": conditions,
        "submission_page_faults": faults["submission"],
        "reference_page_faults": faults["reference"],
        "measurement_flags": flags,
    })
    implausible = _implausible(results, speedup, options, report)
    if implausible:
        report["measurement_flags"] = flags + ["implausible"]
        return session.outcome(Status.IMPLAUSIBLE, implausible, report)
    sub, ref = stats["submission"], stats["reference"]
    equal = ci_low <= 1.0 <= ci_high
    summary = (f"{speedup:.2f}x the reference (95% interval {ci_low:.2f}-{ci_high:.2f}"
               f"{', i.e. no measurable difference' if equal else ''}): "
               f"{sub['median_us']:.1f} us vs {ref['median_us']:.1f} us per call (median wall, "
               f"cpu, {report['num_rounds']} paired calls, {placement.threads} thread(s); CPU "
               f"time {cpu_us['submission']:.1f} us vs {cpu_us['reference']:.1f} us; "
               f"{report['verified_outputs']} timed outputs verified).")
    if flags:
        summary += f" Measurement flags: {', '.join(flags)} (see the report's host conditions)."
    return ToolOutcome(Status.OK, summary, report)


def _output_reused(output_bytes: int, faults: dict[str, float]) -> bool:
    """Both sides get buffers of MMAP_THRESHOLD_BYTES and more on fresh pages each call, so a
    call faults at least the pages its outputs span; one that faults under half of them while
    the reference faults them kept its output buffer from an earlier call, which saves the
    faults and is not the per-call work the reference does."""
    if output_bytes < confine.MMAP_THRESHOLD_BYTES:
        return False
    pages = output_bytes / PAGE_BYTES
    return faults["reference"] >= 0.5 * pages and faults["submission"] < 0.5 * pages


def _implausible(results: list[cpu_sampling.Sampling], speedup: float,
                 options: dict[str, Any], report: dict[str, Any]) -> str:
    """Why the figures cannot be physical, or ""."""
    ceiling = float(options["max_plausible_speedup"])
    if speedup > ceiling:
        return (f"a speedup of {speedup:.0f}x is above the plausible ceiling of {ceiling:g}x "
                "(max_plausible_speedup); not rewarded")
    floor_s = report["floor_us"] / 1e6
    median_s = report["submission"]["median_us"] / 1e6
    if median_s < floor_s:
        return (f"{median_s * 1e6:.3f} us per call is below the {floor_s * 1e6:.3f} us this "
                f"machine needs just to write one call's {results[0].output_bytes} output "
                "bytes; not rewarded")
    return ""


def _write_floor_s(output_bytes: int) -> float:
    """FLOOR_SAFETY x the fastest single copy of one call's output bytes the tool makes here,
    on the measuring CPUs (one write of the output is the least any correct call does). The
    minimum over many copies: load on the machine can only raise a copy's time."""
    import torch

    src = torch.ones(max(1, output_bytes), dtype=torch.uint8)
    dst = torch.zeros_like(src)  # pages touched before timing
    best = math.inf
    for _ in range(max(20, min(1000, (16 << 20) // max(1, output_bytes)))):
        start = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - start)
    return FLOOR_SAFETY * best
