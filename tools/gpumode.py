"""GPU MODE reference-kernels tasks for the check tool, run unchanged.

A task is `reference.py` (generate_input, ref_kernel, check_implementation), `task.yml` (the
`tests` and `benchmarks` cases: keyword arguments of generate_input), usually `task.py` and
`utils.py` that the reference imports, and the model's `submission.py` with `custom_kernel`.
Each test case runs with its seed replaced by a secret one (the published seeds would let a
submission precompute its answers); the task's own check_implementation gives the verdict, in
this trusted process, on outputs that came back from the submission's process as plain tensors.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from perfbox.tools import check as kb
from perfbox.tools.text import bound_text
from perfbox.tools.types import Status, ToolInputError, ToolOutcome, ToolRequest

TASK_FILE = "task.yml"
DEFAULT_SUBMISSION = "submission.py"
MAX_MESSAGE_CHARS = 2000


def is_gpumode(files: list[str]) -> bool:
    return TASK_FILE in files


def names(files: list[str], options: dict[str, Any]) -> tuple[str, str]:
    reference = str(options.get("reference_file") or kb.DEFAULT_REFERENCE)
    submission = str(options.get("submission_file") or DEFAULT_SUBMISSION)
    for name, what in ((reference, "reference_file"), (submission, "submission_file")):
        if name not in files:
            raise ToolInputError(f"GPU MODE task: {name!r} is not among the sources; send it "
                                 f"or set check option {what}")
    return reference, submission


def test_cases(workdir: Path) -> list[dict[str, Any]]:
    import yaml

    try:
        task = yaml.safe_load((workdir / TASK_FILE).read_text())
    except yaml.YAMLError as e:
        raise ToolInputError(f"{TASK_FILE} is not valid YAML: {e}") from e
    cases = task.get("tests") if isinstance(task, dict) else None
    if not cases or not all(isinstance(c, dict) for c in cases):
        raise ToolInputError(f"{TASK_FILE} has no 'tests' list of argument mappings")
    return [dict(c) for c in cases]


def run(request: ToolRequest) -> ToolOutcome:
    reference, submission = names(request.files, request.options)
    cases = test_cases(request.workdir)
    device, refusal = kb.choose_device("check", request.options)
    if refusal is not None:
        return refusal
    ref = kb.import_reference(request.workdir, reference, "reference",  # before the submission
                              ("generate_input", "ref_kernel", "check_implementation"),
                              "GPU MODE task format")
    with kb.submission_side(request.workdir, submission, device) as conn:
        return _check(ref, conn, cases, device, request.options)


def _check(ref: Any, conn: Any, cases: list[dict[str, Any]], device: str,
           options: dict[str, Any]) -> ToolOutcome:
    import torch

    conn.send_bytes(kb._dumps({"format": "gpumode"}))
    ready, why = kb._receive(conn)
    if ready is None:
        return kb._failed(Status.RUNTIME_ERROR, f"submission failed to load: {why}", device,
                          len(cases))
    tol_for = {**kb.DEFAULT_TOLERANCES, **{k: float(v) for k, v in
                                           dict(options.get("tolerances", {})).items()}}
    outputs: list[dict[str, Any]] = []
    deterministic = True
    for index, case in enumerate(cases):
        if "seed" in case:
            case["seed"] = secrets.randbits(31)  # the published seed is public: never use it
        data = ref.generate_input(**case)
        conn.send_bytes(kb._dumps(kb._to_device(data, "cpu")))
        runs, why = kb._receive(conn)
        if runs is None:
            return kb._failed(Status.RUNTIME_ERROR, f"custom_kernel raised on test {index}: "
                              f"{why}", device, len(cases), outputs)
        first, second = runs
        where = _device_of(data) or device
        got = [kb._to_device(t, where) for t in first]
        output = got[0] if len(got) == 1 else tuple(got)
        expected = kb._flatten(ref.ref_kernel(kb._clone(data)))
        for out_index, (exp, out) in enumerate(zip(expected, first)):
            if isinstance(exp, torch.Tensor):
                entry = kb._compare(exp.detach().cpu(), out, tol_for, index, out_index)
                outputs.append(entry)
        good, message = _verdict(ref, data, output)
        if not good:
            reason = f"test {index} ({_describe_case(case)}): {message or 'mismatch'}"
            return kb._failed(Status.WRONG_ANSWER, bound_text(reason, MAX_MESSAGE_CHARS), device,
                              len(cases), outputs)
        if any(not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
                    and a.shape == b.shape and torch.equal(a, b)) for a, b in zip(first, second)):
            deterministic = False
    conn.send_bytes(b"done")
    report = kb._report(True, "", device, len(cases), outputs, deterministic)
    summary = f"Correct on all {len(cases)} test cases of the task ({device}), secret seeds."
    if not deterministic:
        summary += " Note: two runs on the same input gave different outputs."
    return ToolOutcome(Status.OK, summary, report)


def _verdict(ref: Any, data: Any, output: Any) -> tuple[bool, str]:
    """The task's own check_implementation, on a fresh copy of the inputs."""
    try:
        result = ref.check_implementation(kb._clone(data), output)
    except Exception as e:  # a malformed output can make the checker itself raise
        return False, f"check_implementation raised {type(e).__name__}: {e}"
    if isinstance(result, tuple):
        return bool(result[0]), str(result[1]) if len(result) > 1 else ""
    return bool(result), ""


def _device_of(data: Any) -> str:
    import torch

    for value in kb._flatten(data if isinstance(data, (list, tuple)) else [data]):
        if isinstance(value, torch.Tensor):
            return str(value.device)
    return ""


def _describe_case(case: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in case.items() if k != "seed")
