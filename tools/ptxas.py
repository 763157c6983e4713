"""Parses what nvcc and ptxas print: per-kernel resource use and located diagnostics."""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any

_ENTRY_RE = re.compile(r"Compiling entry function '([^']+)' for '(sm_\w+)'")
_PROPS_RE = re.compile(r"Function properties for (\S+)")
_FRAME_RE = re.compile(
    r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads"
)
_USED_RE = re.compile(r"Used (\d+) registers")
_BARRIERS_RE = re.compile(r"used (\d+) barriers")
_SMEM_RE = re.compile(r"(\d+) bytes smem")
_CMEM_RE = re.compile(r"(\d+) bytes cmem\[\d+\]")

# nvcc front end: "k.cu(5): error: ..." / "k.cu(3): warning #177-D: ..."
_NVCC_DIAG_RE = re.compile(
    r"^(?P<file>[^\s(][^(]*)\((?P<line>\d+)\): (?P<sev>error|warning|remark|note|catastrophic error)"
    r"(?: #[\w-]+)?: (?P<msg>.*)$"
)
# host compiler / ptxas style: "k.cu:5:10: error: ..." and "ptxas error   : ..."
_GCC_DIAG_RE = re.compile(
    r"^(?P<file>[^\s:][^:]*):(?P<line>\d+):(?P<col>\d+): (?P<sev>error|warning|note): (?P<msg>.*)$"
)
_PTXAS_DIAG_RE = re.compile(r"^ptxas (?P<sev>error|warning|fatal)\s*: (?P<msg>.*)$")


def parse_ptxas_verbose(text: str) -> list[dict[str, Any]]:
    """Kernels' registers, spills, stack, shared and constant memory from `ptxas -v` output."""
    kernels: dict[str, dict[str, Any]] = {}
    current: dict[str, Any] | None = None
    for line in text.splitlines():
        if m := _ENTRY_RE.search(line):
            current = kernels.setdefault(m.group(1), {"name": m.group(1), "arch": m.group(2)})
            continue
        if m := _PROPS_RE.search(line):
            current = kernels.setdefault(m.group(1), {"name": m.group(1)})
            continue
        if current is None:
            continue
        if m := _FRAME_RE.search(line):
            current["stack_frame_bytes"] = int(m.group(1))
            current["spill_store_bytes"] = int(m.group(2))
            current["spill_load_bytes"] = int(m.group(3))
        if m := _USED_RE.search(line):
            current["registers"] = int(m.group(1))
            if b := _BARRIERS_RE.search(line):
                current["barriers"] = int(b.group(1))
            if s := _SMEM_RE.search(line):
                current["shared_bytes"] = int(s.group(1))
            cmem = [int(c) for c in _CMEM_RE.findall(line)]
            if cmem:
                current["constant_bytes"] = sum(cmem)
    return [k for k in kernels.values() if "arch" in k]


def parse_diagnostics(text: str) -> list[dict[str, Any]]:
    """Compiler messages with file, line and (where a caret line shows it) column."""
    lines = text.splitlines()
    diags: list[dict[str, Any]] = []
    for i, line in enumerate(lines):
        if m := _NVCC_DIAG_RE.match(line):
            diag = {
                "file": m.group("file"),
                "line": int(m.group("line")),
                "severity": "error" if "error" in m.group("sev") else m.group("sev"),
                "message": m.group("msg").strip(),
            }
            # nvcc echoes the source line indented by 2 and a caret under the column.
            if i + 2 < len(lines) and lines[i + 2].strip() == "^":
                diag["column"] = max(1, lines[i + 2].index("^") - 1)
            diags.append(diag)
        elif m := _GCC_DIAG_RE.match(line):
            diags.append({
                "file": m.group("file"), "line": int(m.group("line")),
                "column": int(m.group("col")), "severity": m.group("sev"),
                "message": m.group("msg").strip(),
            })
        elif m := _PTXAS_DIAG_RE.match(line):
            diags.append({
                "file": "ptxas", "severity": "error" if m.group("sev") != "warning" else "warning",
                "message": m.group("msg").strip(),
            })
    return diags


def demangle(names: list[str]) -> dict[str, str]:
    """Mangled -> demangled C++ names (identity where c++filt is missing or the name is C)."""
    cxxfilt = shutil.which("c++filt")
    if not cxxfilt or not names:
        return {n: n for n in names}
    try:
        out = subprocess.run([cxxfilt], input="\n".join(names), capture_output=True, text=True,
                             timeout=10).stdout.splitlines()
    except (OSError, subprocess.TimeoutExpired):
        return {n: n for n in names}
    if len(out) != len(names):
        return {n: n for n in names}
    return dict(zip(names, out))
