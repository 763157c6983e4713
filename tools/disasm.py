"""The disasm tool: SASS and PTX of the compiled kernels with a per-kernel instruction mix."""

from __future__ import annotations

import re
import subprocess
from typing import Any

from perfbox.tools import compile as compile_tool
from perfbox.tools.build import COMPILER_TIMEOUT_S, MAX_ARTIFACT_TEXT_BYTES
from perfbox.tools.ptxas import demangle
from perfbox.tools.sass import describe_mix, instruction_mix, opcodes, split_functions
from perfbox.tools.text import bound_text
from perfbox.tools.toolkit import find_binary
from perfbox.tools.types import Status, ToolOutcome, ToolRequest

LANGUAGES = compile_tool.LANGUAGES
_PTX_ENTRY_RE = re.compile(r"^\.(?:visible\s+)?\.entry\s+(\w+)\s*\(", re.MULTILINE)


def validate(language: str, files: list[str], options: dict[str, Any]) -> None:
    compile_tool.validate(language, files, dict(options.get("compile", {})))


def normalize(options: dict[str, Any]) -> dict[str, Any]:
    out = dict(options)
    out["compile"] = compile_tool.normalize(dict(options.get("compile", {})))
    return out


def _ptx_by_kernel(ptx: str) -> dict[str, str]:
    """Splits a PTX module into its .entry functions (each with the text up to the next one)."""
    starts = [(m.group(1), m.start()) for m in _PTX_ENTRY_RE.finditer(ptx)]
    out = {}
    for i, (name, start) in enumerate(starts):
        end = starts[i + 1][1] if i + 1 < len(starts) else len(ptx)
        out[name] = ptx[start:end]
    return out


def run(request: ToolRequest) -> ToolOutcome:
    options = request.options
    compile_options = dict(options.get("compile", {}))
    b = compile_tool.build(request, compile_options)
    if not b.ok:
        return compile_tool.failure(b, {"compile": b.report()})
    cuobjdump = find_binary("cuobjdump")
    if not cuobjdump:
        return ToolOutcome(Status.UNAVAILABLE_HERE, "cuobjdump is not installed on this node",
                           {"compile": b.report()},
                           error="install nvidia-cuda-cuobjdump or the CUDA toolkit")
    kernels: list[dict[str, Any]] = []
    for binary in b.binaries:
        sass = subprocess.run([cuobjdump, "-sass", str(binary.cubin)], capture_output=True,
                              text=True, timeout=COMPILER_TIMEOUT_S, check=True).stdout
        ptx_parts = _ptx_by_kernel(binary.ptx.read_text())
        functions = split_functions(sass)
        names = demangle(list(functions))
        for name, lines in functions.items():
            entry: dict[str, Any] = {"name": name, "arch": binary.arch,
                                     "mix": instruction_mix(opcodes(lines))}
            if names.get(name, name) != name:
                entry["demangled"] = names[name]
            if options.get("include_sass"):
                entry["sass"] = bound_text("\n".join(lines), MAX_ARTIFACT_TEXT_BYTES)
            if options.get("include_ptx") and name in ptx_parts:
                entry["ptx"] = bound_text(ptx_parts[name], MAX_ARTIFACT_TEXT_BYTES)
            kernels.append(entry)
    summary = "\n".join(
        f"{k.get('demangled') or k['name']} [{k['arch']}]: {describe_mix(k['mix'])}"
        for k in kernels
    )
    return ToolOutcome(Status.OK, summary or "no kernels in the binary",
                       {"kernels": kernels, "compile": b.report()})
