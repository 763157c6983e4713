"""The compile tool: CUDA C++ through nvcc/ptxas, Triton ahead of time, for any target arch."""

from __future__ import annotations

import ast
import re
from typing import Any

from perfbox.tools.archs import validate_archs
from perfbox.tools.build import Build
from perfbox.tools.cuda_compile import compile_cuda, translation_units, validate_defines
from perfbox.tools.text import bound_text
from perfbox.tools.types import Status, ToolInputError, ToolOutcome, ToolRequest

LANGUAGES = ("cuda", "triton")
MAX_SUMMARY_DIAGNOSTICS = 5
NUM_WARPS = (1, 2, 4, 8, 16, 32)
MAX_NUM_STAGES = 16
MAX_TRITON_ARGUMENTS = 256  # entries of `signature` or of `constants`
MAX_CONSTANT_CHARS = 1000
MAX_DEFINES = 256
MAX_DEFINES_CHARS = 64 * 1024  # all -D arguments together, well under the kernel's ARG_MAX
# What triton.compile's ASTSource accepts for an argument on NVIDIA targets.
TRITON_TYPES = ("fp8e4nv", "fp8e4b15", "fp8e5", "fp16", "bf16", "fp32", "fp64",
                "i1", "i8", "i16", "i32", "i64", "u1", "u8", "u16", "u32", "u64")
_TRITON_TYPE_RE = re.compile(r"\*?(?:" + "|".join(TRITON_TYPES) + r")|constexpr")


def validate(language: str, files: list[str], options: dict[str, Any]) -> None:
    """Checks what can be checked before running; raises ToolInputError saying what to fix."""
    if language not in LANGUAGES:
        raise ToolInputError(
            f"compile takes languages {', '.join(LANGUAGES)}; got {language or 'none'}"
        )
    validate_archs([str(a) for a in options.get("archs", [])])
    if language == "cuda":
        translation_units(files)
        defines = [str(d) for d in options.get("defines", [])]
        if len(defines) > MAX_DEFINES or sum(map(len, defines)) > MAX_DEFINES_CHARS:
            raise ToolInputError(f"defines: {len(defines)} definitions, "
                                 f"{sum(map(len, defines))} characters; at most {MAX_DEFINES} "
                                 f"definitions and {MAX_DEFINES_CHARS} characters are accepted")
        validate_defines(defines)
    else:
        if not any(f.endswith(".py") for f in files):
            raise ToolInputError("Triton submissions need a .py file with a @triton.jit kernel")
        validate_triton(options)


def validate_triton(options: dict[str, Any]) -> None:
    """Triton's options, so that a bad one is the client's INVALID_ARGUMENT and not a failure
    deep inside triton.compile."""
    kernel = str(options.get("kernel", ""))
    if kernel and not kernel.isidentifier():
        raise ToolInputError(f"kernel {kernel[:80]!r} is not a Python identifier; give the name "
                             "of a @triton.jit function, or leave it empty")
    warps = int(options.get("num_warps") or 4)
    if warps not in NUM_WARPS:
        raise ToolInputError(f"num_warps must be a power of two from 1 to 32, got {warps}")
    stages = int(options.get("num_stages") or 0)
    if not 0 <= stages <= MAX_NUM_STAGES:
        raise ToolInputError(f"num_stages must be 1..{MAX_NUM_STAGES}, or 0 for the default "
                             f"(3); got {stages}")
    _validate_signature(dict(options.get("signature", {})))
    _validate_constants(dict(options.get("constants", {})))


def _check_argument_names(option: str, names: list[str]) -> None:
    if len(names) > MAX_TRITON_ARGUMENTS:
        raise ToolInputError(f"{option} has {len(names)} entries; at most "
                             f"{MAX_TRITON_ARGUMENTS} are accepted")
    for name in names:
        if not name.isidentifier():
            raise ToolInputError(f"{option}: key {name[:80]!r} is not a Python identifier; "
                                 "use the kernel argument's name")


def _validate_signature(signature: dict[str, Any]) -> None:
    _check_argument_names("signature", list(signature))
    for name, value in signature.items():
        if not _TRITON_TYPE_RE.fullmatch(str(value)):
            raise ToolInputError(
                f"signature[{name!r}] = {str(value)[:80]!r} is not a Triton type; use an optional "
                f"'*' (a pointer) then one of {', '.join(TRITON_TYPES)}, or 'constexpr' "
                "(e.g. '*fp32', 'i32')")


def _validate_constants(constants: dict[str, Any]) -> None:
    _check_argument_names("constants", list(constants))
    for name, value in constants.items():
        text = str(value)
        if len(text) > MAX_CONSTANT_CHARS:
            raise ToolInputError(f"constants[{name!r}] is {len(text)} characters; at most "
                                 f"{MAX_CONSTANT_CHARS} are accepted")
        try:
            ast.literal_eval(text)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as e:
            raise ToolInputError(f"constants[{name!r}] = {text[:80]!r} is not a Python literal "
                                 "(e.g. '1024', 'True', '1.5')") from e


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


# what a compiler's driver says when one of its steps died of SIGXFSZ (RLIMIT_FSIZE)
_FILE_LIMIT_MARKS = ("File size limit exceeded", "file size limit exceeded")


def failure(b: Build, report: dict[str, Any]) -> ToolOutcome:
    """The outcome of a failed build: the source's COMPILE_ERROR, or OUTPUT_LIMIT when a
    compiler step was killed for writing a file past the job's max_file_bytes (the request's
    limit, not the source, failed it)."""
    if any(mark in b.log for mark in _FILE_LIMIT_MARKS):
        return ToolOutcome(Status.OUTPUT_LIMIT, "A file the compiler wrote grew past the job's "
                           "file-size limit; raise limits.max_file_bytes or leave it at the "
                           "default.", report, error="the compiler hit limits.max_file_bytes")
    return ToolOutcome(Status.COMPILE_ERROR, describe_failure(b), report,
                       error="compilation failed")


def run(request: ToolRequest) -> ToolOutcome:
    options = request.options
    b = build(request, options)
    if not b.ok:
        return failure(b, b.report())
    return ToolOutcome(Status.OK, "Compiled.\n" + describe_kernels(b), b.report())
