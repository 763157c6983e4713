"""The compile tool: CUDA C++ through nvcc/ptxas, Triton ahead of time, for any target arch."""

from __future__ import annotations

from typing import Any

from perfbox.tools.archs import validate_archs
from perfbox.tools.build import Build
from perfbox.tools.cuda_compile import compile_cuda, translation_units, validate_defines
from perfbox.tools.text import bound_text
from perfbox.tools.types import Status, ToolInputError, ToolOutcome, ToolRequest

LANGUAGES = ("cuda", "triton")
MAX_SUMMARY_DIAGNOSTICS = 5


def validate(language: str, files: list[str], options: dict[str, Any]) -> None:
    """Checks what can be checked before running; raises ToolInputError saying what to fix."""
    if language not in LANGUAGES:
        raise ToolInputError(
            f"compile takes languages {', '.join(LANGUAGES)}; got {language or 'none'}"
        )
    validate_archs([str(a) for a in options.get("archs", [])])
    if language == "cuda":
        translation_units(files)
        validate_defines([str(d) for d in options.get("defines", [])])
    else:
        if not any(f.endswith(".py") for f in files):
            raise ToolInputError("Triton submissions need a .py file with a @triton.jit kernel")
        warps = int(options.get("num_warps") or 4)
        if warps not in (1, 2, 4, 8, 16, 32):
            raise ToolInputError(f"num_warps must be a power of two from 1 to 32, got {warps}")


def normalize(options: dict[str, Any]) -> dict[str, Any]:
    """Options with defaults filled in, so equal calls get equal cache keys."""
    out = dict(options)
    out["archs"] = validate_archs([str(a) for a in options.get("archs", [])])
    return out


def build(request: ToolRequest, options: dict[str, Any]) -> Build:
    archs = validate_archs([str(a) for a in options.get("archs", [])])
    include_text = bool(options.get("include_artifacts", False))
    if request.language == "cuda":
        return compile_cuda(request.workdir, request.files, archs, options, include_text)
    from perfbox.tools.triton_compile import compile_triton

    return compile_triton(request.workdir, request.files, archs, options, include_text)


def describe_failure(b: Build) -> str:
    """Model-facing text for a failed build: the first few located errors."""
    errors = [d for d in b.diagnostics if d.get("severity") == "error"] or b.diagnostics
    lines = []
    for d in errors[:MAX_SUMMARY_DIAGNOSTICS]:
        where = d.get("file", "?")
        if d.get("line"):
            where += f":{d['line']}"
            if d.get("column"):
                where += f":{d['column']}"
        lines.append(f"{where}: {d.get('message', '')}")
    more = len(errors) - len(lines)
    if more > 0:
        lines.append(f"... and {more} more")
    if not lines:
        lines.append(bound_text(b.log.strip(), 2000) or "the compiler failed without a message")
    return "Compilation failed:\n" + "\n".join(lines)


def describe_kernels(b: Build) -> str:
    """One line per kernel: registers, spills, shared memory."""
    parts = []
    for k in b.kernels:
        name = k.get("demangled") or k["name"]
        spills = k.get("spill_store_bytes", 0) + k.get("spill_load_bytes", 0)
        text = (f"{name} [{k.get('arch', '?')}]: {k.get('registers', 0)} registers, "
                f"{k.get('shared_bytes', 0)} B shared")
        text += f", {spills} B spilled" if spills else ", no spills"
        if k.get("num_warps"):
            text += f", {k['num_warps']} warps"
        parts.append(text)
    return "\n".join(parts) or "no kernels found in the sources"


def run(request: ToolRequest) -> ToolOutcome:
    options = request.options
    b = build(request, options)
    if not b.ok:
        return ToolOutcome(Status.COMPILE_ERROR, describe_failure(b), b.report(),
                           error="compilation failed")
    return ToolOutcome(Status.OK, "Compiled.\n" + describe_kernels(b), b.report())
