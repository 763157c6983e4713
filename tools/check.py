"""The check tool: is a submission numerically the reference, on inputs it cannot predict?

KernelBench (`ModelNew` or a bare CUDA kernel against `Model`) or a GPU MODE task (`custom_kernel`
against `ref_kernel`, the task's own `check_implementation` judging, its test *and* benchmark
cases run with secret seeds). The measurement harness (`perfbox.tools.harness`) forks the
submission's process before any secret exists, confines it, and judges the plain tensors it
sends back here; this module only plans the input sets and turns the findings into an outcome.

Input sets come from the problem's own distribution and, unless the request opts out, a
second one (signs flipped, scaled) so that inputs which make a trivial answer pass (ReLU of
`torch.rand`) do not decide the verdict. An output that a trivial answer (zeros, a constant,
an input returned as is) matches on *every* input set cannot be told from that answer: the
check fails it and says the problem's outputs are degenerate.
"""

from __future__ import annotations

import os
from typing import Any

from perfbox.tools.harness import (compare, confine, flags, inputs, problems, request_policy,
                                   session, wire)
from perfbox.tools.harness.problems import Problem
from perfbox.tools.harness.side import Side
from perfbox.tools.types import Status, ToolInputError, ToolOutcome, ToolRequest

LANGUAGES = ("kernelbench",)
DEFAULT_INPUT_SETS = 5
MAX_INPUT_SETS = 100
MAX_REPORTED_OUTPUTS = 64
MAX_MESSAGE_CHARS = 2000
DONE_EXIT_S = 1.0  # how long the submission's process gets to exit (flushing its prints)


def validate(language: str, files: list[str], options: dict[str, Any]) -> None:
    if language not in LANGUAGES:
        raise ToolInputError(f"check takes language kernelbench; got {language or 'none'}")
    problems.names(files, options)
    sets = int(options.get("num_input_sets") or DEFAULT_INPUT_SETS)
    if not 1 <= sets <= MAX_INPUT_SETS:
        raise ToolInputError(f"num_input_sets must be 1..{MAX_INPUT_SETS}, got {sets}")
    for dtype, tol in dict(options.get("tolerances", {})).items():
        if dtype not in compare.DEFAULT_TOLERANCES or not 0 <= float(tol) < 1:
            raise ToolInputError(f"tolerance {dtype}={tol}: dtype must be one of "
                                 f"{', '.join(compare.DEFAULT_TOLERANCES)} and "
                                 "0 <= tolerance < 1")
    request_policy.validate_common(options)


def normalize(options: dict[str, Any]) -> dict[str, Any]:
    return dict(options)


def run(request: ToolRequest) -> ToolOutcome:
    options = request.options
    device, refusal = request_policy.choose_device("check", options)
    if refusal is not None:
        return refusal
    problem = problems.load(request.files, request.workdir, options, device)
    num_sets = int(options.get("num_input_sets") or DEFAULT_INPUT_SETS)
    found = request_policy.source_flags(problem, options)
    report = _report(False, "", device, 0, [], True, found, [])
    refusal = request_policy.flag_refusal(found, options, report)
    if refusal is not None:
        return refusal
    placement = confine.choose_placement(len(os.sched_getaffinity(0)))
    try:
        with session.start(problem, placement, "check", False, report) as sides:
            return _check(problem, sides.submission, num_sets, found)
    except session.Refused as e:
        return e.outcome


def _plan(problem: Problem, num_sets: int) -> list[tuple[str, dict[str, Any] | None]]:
    """(distribution, GPU MODE case) per input set."""
    if problem.format == problems.GPUMODE:
        return [(inputs.PROBLEM, case) for case in (*problem.cases, *problem.benchmarks)]
    chosen = inputs.distributions(problem.options)
    return [(d, None) for d in chosen for _ in range(num_sets)]


def _answer_bytes(expected: list[Any]) -> int:
    """The most an honest answer to one input set can take: two runs of outputs the size of
    the reference's (any dtype up to 8 bytes per element), plus serialisation overhead."""
    import torch

    elements = sum(t.numel() for t in expected if isinstance(t, torch.Tensor))
    return 2 * 8 * elements + (1 << 20)


def _check(problem: Problem, sub: Side, num_sets: int, found: list[flags.Flag]) -> ToolOutcome:
    tol_for = compare.tolerances(problem.options)
    device = problem.device
    outputs: list[dict[str, Any]] = []
    warnings: list[str] = []
    trivial: dict[int, set[str]] = {}  # output index -> trivial answers that passed every set
    deterministic, problem_finite = True, True
    plan = _plan(problem, num_sets)
    num_run = 0

    def failed(status: Status, reason: str) -> ToolOutcome:
        return session.outcome(status, wire_bound(reason), _report(
            False, reason, device, num_run, outputs, deterministic, found, warnings))

    for set_index, (distribution, case) in enumerate(plan):
        try:
            args = problem.draw(distribution, case)
            expected = problem.expected(args)
        except Exception as e:  # noqa: BLE001 - the caller's reference and get_inputs
            if distribution == inputs.VARIED:
                warnings.append("the reference cannot take sign-varied, scaled inputs "
                                f"({type(e).__name__}); checked on its own distribution only")
                break
            return session.reference_failure(e, _report(False, str(e), device, num_run,
                                                        outputs, True, found, warnings))
        if distribution == inputs.PROBLEM:
            problem_finite = problem_finite and request_policy.all_finite(expected)
        elif problem_finite and not request_policy.all_finite(expected):
            warnings.append("the reference gives non-finite outputs on sign-varied, scaled "
                            "inputs; checked on the problem's own distribution only")
            break
        sub.conn.send_bytes(b"check:" + wire.dumps(args))
        runs, why = wire.receive(sub.conn, _answer_bytes(expected))
        if runs is None:
            what = "custom_kernel" if problem.format == problems.GPUMODE else "ModelNew"
            return failed(Status.RUNTIME_ERROR, f"{what} raised on input set {set_index}: {why}")
        if not (isinstance(runs, list) and len(runs) == 2 and all(isinstance(r, list)
                                                                  for r in runs)):
            return failed(Status.RUNTIME_ERROR, "the submission's process answered something "
                          "other than its outputs")
        num_run += 1
        first, second = runs
        entries, wrong = problem.judge(args, first, tol_for, set_index, expected)
        outputs += entries
        if not wrong:  # both runs are judged: right only every other call is wrong
            _, wrong = problem.judge(args, second, tol_for, set_index, expected)
            wrong = f"second run: {wrong}" if wrong else ""
        if wrong:
            where = f"test {set_index} ({_describe_case(case)})" if case is not None else \
                f"input set {set_index} ({distribution} inputs)"
            return failed(Status.WRONG_ANSWER, f"{where}: {wrong}" if case is not None
                          else f"{wrong} ({distribution} inputs)")
        for index, exp in enumerate(expected):
            names = set(compare.trivial_matches(exp, args, tol_for))
            trivial[index] = trivial.get(index, names) & names
            if names and distribution == inputs.PROBLEM and len(warnings) < 8:
                warnings.append(f"input set {set_index}: output {index} would also be matched "
                                f"by a trivial answer ({', '.join(sorted(names))}): the "
                                "problem's outputs are degenerate on its own inputs")
        if not _same_runs(first, second):
            deterministic = False
    for index, names in sorted(trivial.items()):
        if names:
            return failed(Status.WRONG_ANSWER, f"output {index} cannot be told from a trivial "
                          f"answer ({', '.join(sorted(names))}): it matches on every input set "
                          f"checked, so passing here proves nothing (the problem's outputs "
                          "are degenerate on these inputs)")
    sub.conn.send_bytes(b"done")
    sub.await_exit(DONE_EXIT_S)  # its prints reach the report
    report = _report(True, "", device, num_run, outputs, deterministic, found, warnings)
    worst = max((o.get("max_abs_error", 0.0) for o in outputs), default=0.0)
    what = "test and benchmark cases of the task" if problem.format == problems.GPUMODE \
        else "random input sets"
    summary = (f"Correct on {num_run} {what} ({device}, secret seeds); max abs error "
               f"{compare.finite_or_zero(worst):.3g}.")
    if not deterministic:
        summary += " Note: two runs on the same input gave different outputs."
    if found:
        summary += f" Flagged: {', '.join(sorted({f.category for f in found}))}."
    return ToolOutcome(Status.OK, summary, report)


def _same_runs(first: list[Any], second: list[Any]) -> bool:
    """Whether two runs gave identical outputs (only a note: both were judged)."""
    import torch

    for a, b in zip(first, second):
        if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
            try:
                if a.shape != b.shape or not torch.equal(a, b):
                    return False
            except (RuntimeError, NotImplementedError, TypeError):
                return False  # a layout torch.equal refuses: not plain, already judged wrong
        elif type(a) is not type(b) or a != b:
            return False
    return True


def wire_bound(text: str) -> str:
    from perfbox.tools.text import bound_text

    return bound_text(text, MAX_MESSAGE_CHARS)


def _describe_case(case: dict[str, Any] | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in (case or {}).items() if k != "seed")


def _report(passed: bool, reason: str, device: str, num_sets: int,
            outputs: list[dict[str, Any]], deterministic: bool, found: list[flags.Flag],
            warnings: list[str]) -> dict[str, Any]:
    clean = []
    for o in outputs[:MAX_REPORTED_OUTPUTS]:
        o = dict(o)
        for key in ("max_abs_error", "max_rel_error", "norm_rel_error"):
            if key in o:
                o[key] = compare.finite_or_zero(o[key])
        clean.append(o)
    return {"passed": passed, "reason": reason, "device": device, "num_input_sets": num_sets,
            "outputs": clean, "deterministic": deterministic,
            "flags": [f.to_json() for f in found], "warnings": warnings}

