"""The sanitize tool: compute-sanitizer (memcheck, racecheck, initcheck, synccheck) on the
submission → structured errors (kind, kernel, block/thread, address, size, source line),
bounded per check, with the true count from the sanitizer's summary line.
"""

from __future__ import annotations

from typing import Any

from perfbox.tools import gpu_program, sanitizer_report
from perfbox.tools.toolkit import find_binary
from perfbox.tools.types import Status, ToolInputError, ToolOutcome, ToolRequest

LANGUAGES = ("kernelbench", "cuda")
CHECKS = ("memcheck", "racecheck", "initcheck", "synccheck")
DEFAULT_MAX_ERRORS = 20
MAX_ERRORS = 1000
SUMMARY_ERRORS = 5


def validate(language: str, files: list[str], options: dict[str, Any]) -> None:
    gpu_program.validate_sources("sanitize", language, files, options)
    for check in options.get("checks") or []:
        if check not in CHECKS:
            raise ToolInputError(f"unknown check {check!r}; choose from {', '.join(CHECKS)}")
    if not 0 <= int(options.get("max_errors") or 0) <= MAX_ERRORS:
        raise ToolInputError(f"max_errors must be 1..{MAX_ERRORS}")


def normalize(options: dict[str, Any]) -> dict[str, Any]:
    return dict(options)


def run(request: ToolRequest) -> ToolOutcome:
    refusal = gpu_program.unavailable("sanitize", "compute-sanitizer", "the CUDA toolkit's "
                                      "compute-sanitizer")
    if refusal is not None:
        return refusal
    options, workdir = request.options, request.workdir
    program = gpu_program.build(workdir, request.language, request.files, options, 1,
                                profiler_range=False)
    if isinstance(program, ToolOutcome):
        return program
    max_errors = int(options.get("max_errors") or DEFAULT_MAX_ERRORS)
    runs: list[sanitizer_report.SanitizerRun] = []
    for check in options.get("checks") or ["memcheck"]:
        cmd = [find_binary("compute-sanitizer"), "--tool", check, "--print-limit",
               str(max_errors), *program.argv]
        done = gpu_program.run(cmd, workdir)
        parsed = sanitizer_report.parse(done.stdout + done.stderr, check)
        if not parsed.complete and not parsed.errors:
            return ToolOutcome(Status.RUNTIME_ERROR, f"Runtime error: compute-sanitizer "
                               f"--tool {check} did not finish (exit {done.returncode}):\n"
                               + gpu_program.tail(done.stdout + done.stderr),
                               error=f"compute-sanitizer exited {done.returncode}")
        runs.append(parsed)
    report = {"runs": [r.to_json(max_errors) for r in runs], "tool_version": gpu_program.version_line("compute-sanitizer")}
    found = [r for r in runs if r.error_count or r.errors]
    if not found:
        return ToolOutcome(Status.OK, "No errors: " + ", ".join(
            f"{r.tool} clean" for r in runs) + ".", report)
    lines = []
    for r in found:
        lines.append(f"{r.tool}: {r.error_count or len(r.errors)} errors")
        for error in _distinct(r.errors)[:SUMMARY_ERRORS]:
            lines.append("  " + sanitizer_report.describe(error))
        lines += ["  " + a for a in r.api_errors[:2]]
    first = found[0]
    reason = f"{first.tool} found {first.error_count or len(first.errors)} errors"
    return ToolOutcome(Status.RUNTIME_ERROR, "Sanitizer errors:\n" + "\n".join(lines), report,
                       error=reason)


def _distinct(errors: list[sanitizer_report.SanitizerError]
              ) -> list[sanitizer_report.SanitizerError]:
    """One error per (kind, kernel, file, line): 100 threads hitting one bug are one line."""
    seen, out = set(), []
    for e in errors:
        key = (e.kind, e.kernel, e.file, e.line)
        if key not in seen:
            seen.add(key)
            out.append(e)
    return out
