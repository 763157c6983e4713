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
class Argument:
    """One argument of a tool as a model calls it in a trajectory (flat: a string, integer or
    boolean; RL frameworks' tool-schema classes cannot express nested objects). The problem a
    check/bench/profile acts on is bound to the trajectory, so the model passes only its code."""

    name: str
    type: str  # JSON Schema type: "string", "integer", "boolean"
    description: str
    required: bool = False
    enum: tuple[str, ...] = ()


_CODE = Argument("submission", "string", "The complete Python module defining ModelNew (the "
                 "optimized model; it may load CUDA or Triton kernels).", required=True)
_SOURCE = (Argument("source", "string", "The kernel source: CUDA C++ (a .cu file) or a Python "
                    "module with a @triton.jit kernel (a .py file).", required=True),
           Argument("file", "string", "File name; its suffix picks the language: .cu for "
                    "CUDA, .py for Triton (default kernel.cu)."),
           Argument("arch", "string", "Target GPU architecture, e.g. sm_90 or sm_80 (default "
                    "sm_90)."))


@dataclass(frozen=True)
class ToolSpec:
    """How the service treats one tool."""

    name: str
    description: str
    module: str  # perfbox.tools.<module> holds run() and validate()
    languages: tuple[str, ...]  # "cuda", "triton", "kernelbench"
    needs_gpu: bool  # refused with UNAVAILABLE_HERE on a node without a GPU
    cacheable: bool  # deterministic: results may be served from the result cache
    arguments: tuple[Argument, ...] = ()  # what a model passes when it calls the tool


TOOLS: dict[str, ToolSpec] = {
    spec.name: spec
    for spec in (
        ToolSpec("compile", "CUDA C++ (nvcc/ptxas) or Triton (ahead of time) to PTX and cubin for "
                 "target archs; registers, spills, shared memory, located diagnostics.",
                 "compile", ("cuda", "triton"), needs_gpu=False, cacheable=True,
                 arguments=_SOURCE),
        ToolSpec("disasm", "SASS and PTX of the compiled kernels with a per-kernel instruction "
                 "mix (memory, tensor-core, FP, integer, control ops).",
                 "disasm", ("cuda", "triton"), needs_gpu=False, cacheable=True,
                 arguments=_SOURCE),
        ToolSpec("check", "KernelBench ModelNew (or a GPU MODE custom_kernel) against the "
                 "reference on secret input sets from the problem's distribution and a "
                 "sign-varied, scaled one, in a confined process; tolerances scaled to the "
                 "reference's magnitude plus a norm-relative test, shape/dtype/NaN/Inf "
                 "checks, trivial answers refused, both of two runs judged, static flags. "
                 "GPU when present, else CPU.",
                 "check", ("kernelbench",), needs_gpu=False, cacheable=False,
                 arguments=(_CODE,)),
        ToolSpec("bench", "KernelBench ModelNew (or GPU MODE benchmark cases) timed against "
                 "the reference: the tool's clock around each call of a confined, otherwise "
                 "frozen process, fresh secret inputs per call, timed outputs verified at "
                 "random; speedup with a 95% interval, CPU time, measurement flags, "
                 "IMPLAUSIBLE for unphysical figures. GPU when present, else CPU.",
                 "bench", ("kernelbench",), needs_gpu=False, cacheable=False,
                 arguments=(_CODE,)),
        ToolSpec("profile", "Nsight Compute on the kernels of a KernelBench ModelNew or a CUDA "
                 "program: duration, % of peak, cache hit rates, occupancy, warp stalls, "
                 "roofline, ncu's advice, one condensed line per kernel. Needs a GPU and ncu.",
                 "profile", ("kernelbench", "cuda"), needs_gpu=True, cacheable=False,
                 arguments=(_CODE, Argument(
                     "kernel_filter", "string", "Profile only kernels whose name matches "
                     "this regular expression (default: all)."))),
        ToolSpec("sanitize", "compute-sanitizer memcheck/racecheck/initcheck/synccheck on a "
                 "KernelBench ModelNew or a CUDA program: errors with kernel, thread, block, "
                 "address and source line. Needs a GPU.",
                 "sanitize", ("kernelbench", "cuda"), needs_gpu=True, cacheable=False,
                 arguments=(_CODE, Argument(
                     "check", "string", "Which compute-sanitizer check (default memcheck).",
                     enum=("memcheck", "racecheck", "initcheck", "synccheck")))),
    )
}


def function_schema(spec: ToolSpec) -> dict[str, Any]:
    """The tool as an OpenAI function-calling schema, the form chat templates and RL frameworks
    take: {"type": "function", "function": {"name", "description", "parameters"}}."""
    properties: dict[str, Any] = {}
    for arg in spec.arguments:
        prop: dict[str, Any] = {"type": arg.type, "description": arg.description}
        if arg.enum:
            prop["enum"] = list(arg.enum)
        properties[arg.name] = prop
    return {"type": "function", "function": {
        "name": spec.name, "description": spec.description,
        "parameters": {"type": "object", "properties": properties,
                       "required": [a.name for a in spec.arguments if a.required],
                       "additionalProperties": False}}}


def check_arguments(name: str, arguments: Any) -> list[str]:
    """What is wrong with a model's call of tool `name` against its schema (empty: nothing)."""
    from perfbox.function_schema import check_arguments as against

    return against(function_schema(get(name)), arguments)


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


__all__ = ["TOOLS", "Argument", "ToolSpec", "Status", "ToolInputError", "ToolOutcome",
           "ToolRequest", "check_arguments", "function_schema", "get", "run", "validate"]
