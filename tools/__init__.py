"""The tools a reasoning model calls. Each is a plain function `run(ToolRequest) -> ToolOutcome`
plus a `validate(language, files, options)` that rejects bad input before any work; both run
equally in-process (tests, the `process` backend) or inside a sandboxed worker. Nothing here
imports the sandbox.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from perfbox.tools.types import Status, ToolInputError, ToolOutcome, ToolRequest


@dataclass(frozen=True)
class ToolSpec:
    """How the service treats one tool."""

    name: str
    description: str
    module: str  # perfbox.tools.<module> holds run() and validate()
    languages: tuple[str, ...]  # "cuda", "triton", "kernelbench"
    needs_gpu: bool  # refused with UNAVAILABLE_HERE on a node without a GPU
    cacheable: bool  # deterministic: results may be served from the result cache
    options_field: str  # name of the request's options message in the proto oneof


TOOLS: dict[str, ToolSpec] = {
    spec.name: spec
    for spec in (
        ToolSpec("compile", "CUDA C++ (nvcc/ptxas) or Triton (ahead of time) to PTX and cubin for "
                 "target archs; registers, spills, shared memory, located diagnostics.",
                 "compile", ("cuda", "triton"), needs_gpu=False, cacheable=True,
                 options_field="compile"),
        ToolSpec("disasm", "SASS and PTX of the compiled kernels with a per-kernel instruction "
                 "mix (memory, tensor-core, FP, integer, control ops).",
                 "disasm", ("cuda", "triton"), needs_gpu=False, cacheable=True,
                 options_field="disasm"),
        ToolSpec("check", "KernelBench ModelNew (or a GPU MODE custom_kernel) against the "
                 "reference on secret input sets from the problem's distribution and a "
                 "sign-varied, scaled one, in a confined process; tolerances scaled to the "
                 "reference's magnitude plus a norm-relative test, shape/dtype/NaN/Inf "
                 "checks, trivial answers refused, both of two runs judged, static flags. "
                 "GPU when present, else CPU.",
                 "check", ("kernelbench",), needs_gpu=False, cacheable=False,
                 options_field="check"),
        ToolSpec("bench", "KernelBench ModelNew (or GPU MODE benchmark cases) timed against "
                 "the reference: the tool's clock around each call of a confined, otherwise "
                 "frozen process, fresh secret inputs per call, timed outputs verified at "
                 "random; speedup with a 95% interval, CPU time, measurement flags, "
                 "IMPLAUSIBLE for unphysical figures. GPU when present, else CPU.",
                 "bench", ("kernelbench",), needs_gpu=False, cacheable=False,
                 options_field="bench"),
        ToolSpec("profile", "Nsight Compute on the kernels of a KernelBench ModelNew or a CUDA "
                 "program: duration, % of peak, cache hit rates, occupancy, warp stalls, "
                 "roofline, ncu's advice, one condensed line per kernel. Needs a GPU and ncu.",
                 "profile", ("kernelbench", "cuda"), needs_gpu=True, cacheable=False,
                 options_field="profile"),
        ToolSpec("sanitize", "compute-sanitizer memcheck/racecheck/initcheck/synccheck on a "
                 "KernelBench ModelNew or a CUDA program: errors with kernel, thread, block, "
                 "address and source line. Needs a GPU.",
                 "sanitize", ("kernelbench", "cuda"), needs_gpu=True, cacheable=False,
                 options_field="sanitize"),
    )
}


def get(name: str) -> ToolSpec:
    """The tool's spec, or an error naming the tools that exist."""
    if name not in TOOLS:
        raise ToolInputError(f"unknown tool {name!r}; choose one of: {', '.join(TOOLS)}")
    return TOOLS[name]


def _module(spec: ToolSpec) -> Any:
    return importlib.import_module(f"perfbox.tools.{spec.module}")


def validate(name: str, language: str, files: list[str], options: dict[str, Any]
             ) -> dict[str, Any]:
    """Raises ToolInputError when the call cannot run as given; returns the options with
    defaults filled in (equal calls, equal cache keys)."""
    spec = get(name)
    if language not in spec.languages:
        raise ToolInputError(
            f"tool {name!r} takes languages {', '.join(spec.languages)}; got {language or 'none'}"
        )
    validator: Callable[[str, list[str], dict[str, Any]], None] = _module(spec).validate
    validator(language, files, options)
    return _module(spec).normalize(options)


def run(request: ToolRequest) -> ToolOutcome:
    """Runs a tool; input problems found only while running become REJECTED outcomes, and
    submitted code that ended its own process a RUNTIME_ERROR."""
    from perfbox.tools.untrusted import SubmissionEnded

    spec = get(request.tool)
    try:
        return _module(spec).run(request)
    except ToolInputError as e:
        return ToolOutcome(Status.REJECTED, f"Request rejected: {e}", error=str(e))
    except SubmissionEnded as e:
        return ToolOutcome(e.status, f"{e.status.name}: {e}.", error=str(e))


__all__ = ["TOOLS", "ToolSpec", "Status", "ToolInputError", "ToolOutcome", "ToolRequest", "get",
           "run", "validate"]
