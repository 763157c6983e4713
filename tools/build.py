"""The result of compiling a submission, shared by the compile and disasm tools."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perfbox.tools.text import bound_text

MAX_ARTIFACT_TEXT_BYTES = 64 * 1024  # per artifact text included in a report
COMPILER_TIMEOUT_S = 300  # one nvcc/ptxas/triton step; the sandbox's wall limit is the real cap


@dataclass
class BuiltBinary:
    """One cubin and the PTX it came from."""

    arch: str  # "sm_90"
    cubin: Path
    ptx: Path
    source: str  # workspace-relative source name


@dataclass
class Build:
    """Everything the compile step produced."""

    ok: bool
    kernels: list[dict[str, Any]] = field(default_factory=list)  # CompiledKernel JSON
    diagnostics: list[dict[str, Any]] = field(default_factory=list)  # Diagnostic JSON
    artifacts: list[dict[str, Any]] = field(default_factory=list)  # Artifact JSON
    binaries: list[BuiltBinary] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    compile_ms: int = 0
    log: str = ""  # raw compiler output, bounded later

    def report(self) -> dict[str, Any]:
        """CompileReport JSON."""
        return {
            "kernels": self.kernels,
            "diagnostics": self.diagnostics,
            "artifacts": self.artifacts,
            "command": self.commands,
            "compile_ms": self.compile_ms,
        }


def artifact(path: Path, kind: str, arch: str, include_text: bool) -> dict[str, Any]:
    """Artifact JSON for a file the compiler wrote."""
    data = path.read_bytes()
    entry: dict[str, Any] = {
        "name": path.name,
        "kind": kind,
        "arch": arch,
        "size_bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    if include_text and kind != "cubin":
        entry["text"] = bound_text(data.decode("utf-8", errors="replace"), MAX_ARTIFACT_TEXT_BYTES)
    return entry
