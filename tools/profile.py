"""The profile tool: Nsight Compute on the submission's kernels → per-kernel metrics (duration,
throughput as % of peak, cache hit rates, occupancy, registers, shared memory, warp stalls,
roofline position), Nsight Compute's own advice, and one condensed line per kernel; optionally
an Nsight Systems summary. Warm-up launches are skipped (KernelBench: profiling starts after
`warmup_calls` forward calls; CUDA programs: `--launch-skip` is not needed, the filter is).
"""

from __future__ import annotations

import re
from typing import Any

from perfbox.tools import gpu_program, ncu_report, nsys_report
from perfbox.tools.toolkit import find_binary
from perfbox.tools.types import Status, ToolInputError, ToolOutcome, ToolRequest

LANGUAGES = ("kernelbench", "cuda")
DEFAULT_SECTIONS = ("SpeedOfLight", "MemoryWorkloadAnalysis", "Occupancy", "LaunchStats",
                    "WarpStateStats", "ComputeWorkloadAnalysis", "SpeedOfLight_RooflineChart")
KNOWN_SECTIONS = DEFAULT_SECTIONS + (
    "SchedulerStats", "InstructionStats", "SourceCounters", "MemoryWorkloadAnalysis_Chart",
    "MemoryWorkloadAnalysis_Tables", "SpeedOfLight_HierarchicalSingleRooflineChart",
    "SpeedOfLight_HierarchicalHalfRooflineChart", "SpeedOfLight_HierarchicalTensorRooflineChart",
    "PmSampling", "WorkloadDistribution", "NumaAffinity", "Nvlink")
DEFAULT_MAX_KERNELS = 20
MAX_KERNELS = 200
MAX_SUMMARY_KERNELS = 8
_PERMISSION = "ERR_NVGPUCTRPERM"


def validate(language: str, files: list[str], options: dict[str, Any]) -> None:
    gpu_program.validate_sources("profile", language, files, options)
    for section in options.get("sections") or []:
        if section not in KNOWN_SECTIONS:
            raise ToolInputError(f"unknown ncu section {section!r}; choose from "
                                 f"{', '.join(KNOWN_SECTIONS)}")
    if options.get("kernel_filter"):
        try:
            re.compile(str(options["kernel_filter"]))
        except re.error as e:
            raise ToolInputError(f"kernel_filter is not a regular expression: {e}") from e
    if not 0 <= int(options.get("max_kernels") or 0) <= MAX_KERNELS:
        raise ToolInputError(f"max_kernels must be 1..{MAX_KERNELS}")


def normalize(options: dict[str, Any]) -> dict[str, Any]:
    return dict(options)


def ncu_command(options: dict[str, Any], report: str, kernelbench: bool) -> list[str]:
    cmd = [find_binary("ncu"), "--target-processes", "all"]
    for section in options.get("sections") or DEFAULT_SECTIONS:
        cmd += ["--section", section]
    cmd += ["--launch-count", str(int(options.get("max_kernels") or DEFAULT_MAX_KERNELS))]
    if kernelbench:
        cmd += ["--profile-from-start", "off"]
    if options.get("kernel_filter"):
        cmd += ["-k", f"regex:{options['kernel_filter']}"]
    return cmd + ["-f", "-o", report]


def run(request: ToolRequest) -> ToolOutcome:
    refusal = gpu_program.unavailable("profile", "ncu", "Nsight Compute")
    if refusal is not None:
        return refusal
    options, workdir = request.options, request.workdir
    kernelbench = request.language == "kernelbench"
    program = gpu_program.build(workdir, request.language, request.files, options,
                                int(options.get("warmup_calls") or 2), profiler_range=True)
    if isinstance(program, ToolOutcome):
        return program
    report = str(workdir / "perfbox_profile")
    cmd = ncu_command(options, report, kernelbench) + program.argv
    done = gpu_program.run(cmd, workdir)
    output = done.stdout + done.stderr
    if _PERMISSION in output:
        return ToolOutcome(Status.UNAVAILABLE_HERE, "profile: this node restricts the GPU's "
                           "performance counters to administrators (NVreg_RestrictProfiling"
                           "ToAdminUsers=1); an operator must lift that", error=_PERMISSION)
    rep = workdir / "perfbox_profile.ncu-rep"
    if not rep.exists() and "No kernels were profiled" in output:
        return _no_kernels(output, {"command": cmd, "tool_version": gpu_program.version_line("ncu")})
    if not rep.exists():
        status = Status.RUNTIME_ERROR
        return ToolOutcome(status, "Runtime error: the program failed under Nsight Compute "
                           f"(exit {done.returncode}):\n{gpu_program.tail(output)}",
                           {"command": cmd}, error=f"program exited {done.returncode}")
    raw = gpu_program.run([find_binary("ncu"), "--import", str(rep), "--csv", "--page", "raw",
                           "--print-units", "base"], workdir).stdout
    details = gpu_program.run([find_binary("ncu"), "--import", str(rep), "--csv", "--page",
                               "details", "--print-units", "base", "--print-details", "all"],
                              workdir).stdout
    kernels = ncu_report.parse(raw, details)
    version = gpu_program.version_line("ncu")
    result: dict[str, Any] = {"kernels": [k.to_json() for k in kernels],
                              "tool_version": version, "command": cmd}
    if options.get("nsys"):
        result["nsys"] = nsys_report.summarize(program.argv, workdir, gpu_program.tool_env(),
                                               gpu_program.RUN_TIMEOUT_S)
    if not kernels:
        return _no_kernels(output, result)
    if done.returncode != 0:
        result_status = Status.RUNTIME_ERROR
        return ToolOutcome(result_status, f"Runtime error: the program exited {done.returncode} "
                           f"after {len(kernels)} kernels were profiled.\n"
                           + gpu_program.tail(output), result,
                           error=f"program exited {done.returncode}")
    lines = [k.to_json()["summary"] for k in kernels[:MAX_SUMMARY_KERNELS]]
    more = len(kernels) - MAX_SUMMARY_KERNELS
    if more > 0:
        lines.append(f"... and {more} more kernels")
    total = sum(k.metric("gpu__time_duration.sum") for k in kernels) / 1e3
    return ToolOutcome(Status.OK, f"Profiled {len(kernels)} kernels ({total:.1f} us in all):\n"
                       + "\n".join(lines), result)


def _no_kernels(output: str, result: dict[str, Any]) -> ToolOutcome:
    """OK, but saying so: nothing matched the filter or nothing ran on the GPU; ncu lists the
    kernels it saw, which the summary passes on."""
    seen = [line.split(".", 1)[-1].strip() for line in output.splitlines()
            if re.match(r"^\d+\. ", line)]
    hint = f" (kernels seen: {', '.join(seen[:10])})" if seen else ""
    return ToolOutcome(Status.OK, f"No kernel was profiled{hint}: check kernel_filter, or "
                       "whether the code launches GPU kernels at all.", result)
