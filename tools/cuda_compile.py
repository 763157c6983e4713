"""CUDA C++ -> PTX -> cubin with nvcc and ptxas, per target architecture.

Two steps instead of `nvcc -cubin` so the PTX (for disasm and for the model) and the
`ptxas -v` resource report come from the same build, at the cost of one extra short process.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path
from typing import Any

from perfbox.tools.build import COMPILER_TIMEOUT_S, Build, BuiltBinary, artifact
from perfbox.tools.ptxas import demangle, parse_diagnostics, parse_ptxas_verbose
from perfbox.tools.toolkit import find_binary
from perfbox.tools.types import ToolInputError

_DEFINE_RE = re.compile(r"^[A-Za-z_]\w*(=[^\s]*)?$")
_TRANSLATION_UNIT_SUFFIXES = (".cu",)


def translation_units(files: list[str]) -> list[str]:
    units = [f for f in files if f.endswith(_TRANSLATION_UNIT_SUFFIXES)]
    if not units:
        raise ToolInputError(
            "no .cu file among the sources; CUDA submissions need at least one .cu file "
            f"(got: {', '.join(files)})"
        )
    return units


def validate_defines(defines: list[str]) -> list[str]:
    for define in defines:
        if not _DEFINE_RE.match(define):
            raise ToolInputError(
                f"define {define!r} is not NAME or NAME=VALUE (no spaces, no leading dash)"
            )
    return defines


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True,
                          timeout=COMPILER_TIMEOUT_S)


def compile_cuda(workdir: Path, files: list[str], archs: list[str], options: dict[str, Any],
                 include_text: bool) -> Build:
    """Compiles every .cu file for every arch into workdir/build/."""
    nvcc, ptxas = find_binary("nvcc"), find_binary("ptxas")
    if not nvcc or not ptxas:
        raise FileNotFoundError("nvcc/ptxas not found: install the CUDA toolkit or nvidia-cuda-nvcc")
    defines = validate_defines([str(d) for d in options.get("defines", [])])
    line_info = bool(options.get("line_info", False))
    out_dir = workdir / "build"
    out_dir.mkdir(exist_ok=True)
    build = Build(ok=True)
    logs: list[str] = []
    started = time.monotonic()
    for source in translation_units(files):
        stem = Path(source).name.removesuffix(".cu")
        for arch in archs:
            ptx = out_dir / f"{stem}.{arch}.ptx"
            cubin = out_dir / f"{stem}.{arch}.cubin"
            front = [nvcc, "-ptx", f"-arch={arch}", "-std=c++17", *[f"-D{d}" for d in defines]]
            front += ["-lineinfo"] if line_info else []
            front += [source, "-o", str(ptx.relative_to(workdir))]
            back = [ptxas, f"-arch={arch}", "-v", str(ptx.relative_to(workdir)),
                    "-o", str(cubin.relative_to(workdir))]
            back += ["-lineinfo"] if line_info else []
            for step in (front, back):
                build.commands.append(" ".join([Path(step[0]).name, *step[1:]]))
                proc = _run(step, workdir)
                logs.append(proc.stdout + proc.stderr)
                build.diagnostics += parse_diagnostics(proc.stderr + proc.stdout)
                if proc.returncode != 0:
                    build.ok = False
                    break
                if step is back:
                    build.kernels += parse_ptxas_verbose(proc.stderr + proc.stdout)
            if not build.ok:
                break
            build.binaries.append(BuiltBinary(arch, cubin, ptx, source))
            build.artifacts.append(artifact(ptx, "ptx", arch, include_text))
            build.artifacts.append(artifact(cubin, "cubin", arch, include_text))
        if not build.ok:
            break
    names = demangle([k["name"] for k in build.kernels])
    for kernel in build.kernels:
        if names.get(kernel["name"], kernel["name"]) != kernel["name"]:
            kernel["demangled"] = names[kernel["name"]]
    build.compile_ms = int((time.monotonic() - started) * 1000)
    build.log = "".join(logs)
    return build
