"""Setting up a measurement: the submission's side forked before any secret exists, confined,
given its build request; the reference's side forked after; everything killed at the end.

Outcomes that are not the submission's doing get the status that names who failed: a node that
cannot confine a submission is UNAVAILABLE_HERE (never a silent unconfined run), a reference
that needs CUDA on a CPU node is UNAVAILABLE_HERE, a reference that raises is the caller's bad
request, the tool running out of memory while it builds inputs is MEMORY_LIMIT naming the tool.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from perfbox.tools.harness import confine, problems, side, wire
from perfbox.tools.types import Status, ToolInputError, ToolOutcome

CUDA_MISSING = ("Torch not compiled with CUDA", "Found no NVIDIA driver", "no CUDA GPUs",
                "CUDA driver", "cudaGetDeviceCount")


class Refused(Exception):
    """The measurement cannot go on; `outcome` says why and whose fault it is."""

    def __init__(self, outcome: ToolOutcome) -> None:
        super().__init__(outcome.error)
        self.outcome = outcome


@dataclass
class Sides:
    """The running sides of one measurement."""

    submission: side.Side
    reference: side.Side | None

    def as_dict(self) -> dict[str, side.Side]:
        out = {"submission": self.submission}
        if self.reference is not None:
            out["reference"] = self.reference
        return out


def failure_word(status: Status) -> str:
    return {Status.WRONG_ANSWER: "Wrong answer", Status.COMPILE_ERROR: "Compile error",
            Status.UNAVAILABLE_HERE: "Unavailable here", Status.MEMORY_LIMIT: "Memory limit",
            Status.REJECTED: "Rejected"}.get(status, "Runtime error")


def outcome(status: Status, reason: str, report: dict[str, Any]) -> ToolOutcome:
    return ToolOutcome(status, f"{failure_word(status)}: {reason}", report, error=reason)


def reference_failure(e: BaseException, report: dict[str, Any]) -> ToolOutcome:
    """What to answer when the reference (the caller's code, run by the tool) fails."""
    text = f"{type(e).__name__}: {e}"
    if isinstance(e, MemoryError):
        return outcome(Status.MEMORY_LIMIT, "the tool ran out of memory running the reference "
                       "or building its inputs (the problem's size, not the submission)", report)
    if any(marker in text for marker in CUDA_MISSING):
        return outcome(Status.UNAVAILABLE_HERE, "the reference needs CUDA and this node has no "
                       f"GPU ({text[:300]})", report)
    raise ToolInputError(f"the reference raised {text[:500]}") from e


def syntax_error(path: Path) -> str:
    """Why the submission's module is not valid Python ("" when it is), found by the tool
    compiling it (never executing it) before any process of the submission's exists: the
    verdict and its line number are the tool's, not a message the submission could raise."""
    try:
        compile(path.read_bytes(), path.name, "exec", dont_inherit=True)
    except SyntaxError as e:  # IndentationError and TabError too
        return f"{e.msg} ({path.name}, line {e.lineno})"
    except (ValueError, RecursionError, MemoryError, OSError):
        return ""  # not for this check to judge: importing it will say
    return ""


@contextlib.contextmanager
def start(problem: problems.Problem, placement: confine.Placement, mode: str,
          with_reference: bool, report: dict[str, Any]) -> Iterator[Sides]:
    """Forks and prepares the sides; raises Refused with the outcome when a side cannot be
    built. Every process of both sides is killed on exit."""
    why = confine.available()
    if why:
        raise Refused(outcome(Status.UNAVAILABLE_HERE, why, report))
    side.protect_tool()
    module_file = None if problem.options.get("launch") else problem.submission_file
    if module_file:
        why = syntax_error(problem.workdir / module_file)
        if why:
            what = "custom_kernel" if problem.format == problems.GPUMODE else "ModelNew"
            raise Refused(outcome(Status.COMPILE_ERROR, f"{what} does not compile: {why}",
                                  report))
    sub = side.fork_side(side.SUBMISSION, side.submission_body(
        problem.workdir, placement, problems.build_submission, module_file))
    ref: side.Side | None = None
    if with_reference:  # forked now too: the two sides start from the same state
        ref = side.fork_side(side.REFERENCE, side.reference_body(
            placement, problem.build_reference))
        sub.set_others((ref.pid,))
        ref.set_others((sub.pid,))
    try:
        why = wire.receive_marker(sub.conn, side.CONFINED)
        if why:
            raise Refused(outcome(Status.UNAVAILABLE_HERE, "the submission could not be "
                                  f"confined on this node: {why}", report))
        try:
            problem.draw_secrets()
        except Exception as e:  # noqa: BLE001 - the caller's get_init_inputs
            raise Refused(reference_failure(e, report)) from e
        sub.conn.send_bytes(wire.dumps(problem.submission_request(mode)))
        ready, why = wire.receive(sub.conn)
        if ready is None:
            status = Status.COMPILE_ERROR if why.startswith(wire.COMPILE_FAILED) else \
                Status.RUNTIME_ERROR
            what = "custom_kernel" if problem.format == problems.GPUMODE else "ModelNew"
            raise Refused(outcome(status, f"{what} failed to build: {why}", report))
        if ref is not None:
            why = wire.receive_marker(ref.conn, side.CONFINED)
            if why:
                raise Refused(outcome(Status.UNAVAILABLE_HERE, "the reference's process could "
                                      f"not be confined on this node: {why}", report))
            ref.conn.send_bytes(wire.dumps(problem.reference_request(mode)))
            ready, why = wire.receive(ref.conn)
            if ready is None:
                raise ToolInputError(f"the reference failed to build in its process: {why}")
        yield Sides(sub, ref)
    finally:
        for s in (sub, ref):
            if s is not None:
                s.stop()
