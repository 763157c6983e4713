"""What profile and sanitize run: the command line of a submission as a GPU program.

KernelBench sources run through perfbox.tools.kernel_runner; CUDA sources are built as a
program (nvcc, -lineinfo so reports name source lines, for the node's own GPU) and run with the
request's arguments. Both tools refuse, with UNAVAILABLE_HERE and what is missing, on a node
without a GPU or without the NVIDIA tool they drive.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perfbox.tools.harness import problems
from perfbox.tools.cuda_compile import translation_units
from perfbox.tools.toolkit import find_binary
from perfbox.tools.types import Status, ToolInputError, ToolOutcome

RUN_TIMEOUT_S = 900  # the sandbox's wall-time limit is the real cap
MAX_ARGS = 64


@dataclass
class Program:
    argv: list[str]  # what to run under the NVIDIA tool
    build_log: str = ""


def validate_sources(tool: str, language: str, files: list[str], options: dict[str, Any]
                     ) -> None:
    if language == "kernelbench":
        problems.kernelbench_names(files, options)
    elif language == "cuda":
        if not translation_units(files):
            raise ToolInputError(f"{tool} on cuda sources needs a .cu file with main()")
    else:
        raise ToolInputError(f"{tool} takes languages kernelbench or cuda; got "
                             f"{language or 'none'}")
    if len(list(options.get("args") or [])) > MAX_ARGS:
        raise ToolInputError(f"at most {MAX_ARGS} program arguments")


def gpu_arch() -> str | None:
    """sm_XY of GPU 0 from NVML, or None without a GPU."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            if pynvml.nvmlDeviceGetCount() < 1:
                return None
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(
                pynvml.nvmlDeviceGetHandleByIndex(0))
            return f"sm_{major}{minor}"
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no pynvml, no driver, no device: the arch is unknown, not an error
        return None


def unavailable(tool: str, binary: str, purpose: str) -> ToolOutcome | None:
    """The refusal when this node cannot run the tool, else None."""
    if gpu_arch() is None:
        return ToolOutcome(Status.UNAVAILABLE_HERE, f"{tool} needs an NVIDIA GPU and this node "
                           "has none; compile and disasm (registers, spills, SASS mix) work "
                           "here", error="no GPU on this node")
    if not find_binary(binary):
        return ToolOutcome(Status.UNAVAILABLE_HERE, f"{tool} needs {binary} ({purpose}), which "
                           "is not installed on this node: install it with the CUDA toolkit "
                           "or put it on PATH", error=f"{binary} not found")
    return None


def tool_env() -> dict[str, str]:
    """The NVIDIA tools write caches and locks under HOME and TMPDIR: both go to /tmp."""
    env = dict(os.environ)
    env.setdefault("HOME", "/tmp")
    env.setdefault("TMPDIR", "/tmp")
    return env


def build(workdir: Path, language: str, files: list[str], options: dict[str, Any],
          warmup: int, profiler_range: bool) -> Program | ToolOutcome:
    """The program's argv, or the COMPILE_ERROR outcome."""
    if language == "kernelbench":
        reference, submission = problems.kernelbench_names(files, options)
        argv = [sys.executable, "-m", "perfbox.tools.kernel_runner", str(workdir), submission,
                reference, "--warmup", str(warmup)]
        return Program(argv + (["--profiler-range"] if profiler_range else []))
    arch = gpu_arch() or "sm_90"
    exe = workdir / "perfbox_program"
    cmd = [find_binary("nvcc") or "nvcc", "-lineinfo", f"-arch={arch}", "-o", str(exe),
           *translation_units(files)]
    done = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S, env=tool_env())
    log = done.stdout + done.stderr
    if done.returncode != 0:
        return ToolOutcome(Status.COMPILE_ERROR, "Compile error: the program did not build: "
                           + (log.strip().splitlines() or ["nvcc failed"])[0],
                           {}, error="nvcc failed")
    return Program([str(exe), *[str(a) for a in options.get("args") or []]], log)


def run(argv: list[str], workdir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=workdir, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S, env=tool_env())


def version_line(binary: str) -> str:
    """The last line of `binary --version` (ncu and compute-sanitizer print
    "Version 2025.3.1.0 (build ...)" there); "" when it prints nothing."""
    done = run([find_binary(binary), "--version"], Path("/tmp"))
    return (done.stdout.strip().splitlines() or [""])[-1]


def tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])
