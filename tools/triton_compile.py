"""Triton kernels compiled ahead of time for a target architecture, with no GPU present.

`triton.compile(ASTSource(fn, signature, constexprs), target=GPUTarget("cuda", cap, 32))` runs
the whole pipeline (TTIR -> TTGIR -> LLIR -> PTX -> cubin) on the CPU. Resource use comes from
running Triton's own ptxas with -v on the PTX it produced (the CompiledKernel only learns its
register count from a live driver).
"""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from perfbox.tools.build import COMPILER_TIMEOUT_S, Build, BuiltBinary, artifact
from perfbox.tools.ptxas import parse_ptxas_verbose
from perfbox.tools.types import ToolInputError

_ASM_KINDS = ("ttir", "ttgir", "llir", "ptx")


class SourceError(Exception):
    """The user's module failed to load; carries a located diagnostic."""

    def __init__(self, diagnostic: dict[str, Any]) -> None:
        super().__init__(diagnostic["message"])
        self.diagnostic = diagnostic


def _load_module(workdir: Path, name: str) -> Any:
    path = workdir / name
    try:
        ast.parse(path.read_text(), filename=name)
    except SyntaxError as e:
        raise SourceError({"file": name, "line": e.lineno or 0, "column": e.offset or 0,
                           "severity": "error", "message": f"SyntaxError: {e.msg}"}) from e
    if str(workdir) not in sys.path:
        sys.path.insert(0, str(workdir))
    module_name = f"perfbox_submission_{Path(name).stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # the submission's own code raised: report where
        line = 0
        for frame in traceback.extract_tb(e.__traceback__):
            if frame.filename == str(path):
                line = frame.lineno or 0
        raise SourceError({"file": name, "line": line, "severity": "error",
                           "message": f"importing {name} raised {type(e).__name__}: {e}"}) from e
    return module


def _jit_functions(module: Any) -> dict[str, Any]:
    from triton.runtime.jit import JITFunction

    return {n: v for n, v in vars(module).items() if isinstance(v, JITFunction)}


def find_kernel(workdir: Path, files: list[str], wanted: str) -> tuple[str, Any]:
    """(source file, JITFunction) for the requested kernel, or the only one there is."""
    found: dict[str, tuple[str, Any]] = {}
    for name in files:
        if name.endswith(".py"):
            for fn_name, fn in _jit_functions(_load_module(workdir, name)).items():
                found.setdefault(fn_name, (name, fn))
    if not found:
        raise ToolInputError("no @triton.jit function found in the .py sources")
    if wanted:
        if wanted not in found:
            raise ToolInputError(
                f"kernel {wanted!r} not found; the sources define: {', '.join(sorted(found))}"
            )
        return found[wanted]
    if len(found) > 1:
        raise ToolInputError(
            "several @triton.jit functions found; name one with the compile option 'kernel': "
            + ", ".join(sorted(found))
        )
    return next(iter(found.values()))


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError) as e:
        raise ToolInputError(f"constant value {text!r} is not a Python literal") from e


def signature_of(fn: Any, given: dict[str, str], constants: dict[str, str]
                 ) -> tuple[dict[str, str], dict[str, Any]]:
    """Full Triton signature and constexpr values, inferring what the request left out."""
    signature: dict[str, str] = {}
    constexprs: dict[str, Any] = {}
    unknown = set(given) | set(constants)
    for param in fn.params:
        name = param.name
        unknown.discard(name)
        if param.is_constexpr:
            signature[name] = "constexpr"
            if name in constants:
                constexprs[name] = _literal(constants[name])
            elif _has_default(param):
                constexprs[name] = param.default
            else:
                raise ToolInputError(
                    f"constexpr argument {name!r} of {fn.__name__} needs a value: pass it in the "
                    f"compile option 'constants', e.g. {{\"{name}\": \"1024\"}}"
                )
        elif name in constants:
            signature[name] = "constexpr"
            constexprs[name] = _literal(constants[name])
        else:
            signature[name] = given.get(name) or ("*fp32" if name.endswith("ptr") else "i32")
    if unknown:
        raise ToolInputError(
            f"{fn.__name__} has no argument(s) {', '.join(sorted(unknown))}; its arguments are "
            + ", ".join(p.name for p in fn.params)
        )
    return signature, constexprs


def _has_default(param: Any) -> bool:
    import inspect

    return param.default is not inspect.Parameter.empty


def _ptxas(arch: str) -> str:
    """The ptxas Triton itself uses for this arch (its PTX version may be newer than the
    system toolkit's ptxas accepts)."""
    from triton.backends.nvidia.compiler import get_ptxas

    from perfbox.tools.archs import capability

    return str(get_ptxas(capability(arch)).path)


def compile_triton(workdir: Path, files: list[str], archs: list[str], options: dict[str, Any],
                   include_text: bool) -> Build:
    """Compiles the chosen @triton.jit kernel for every arch into workdir/build/."""
    import subprocess

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.compiler.errors import CompilationError

    from perfbox.tools.archs import capability

    build = Build(ok=True)
    started = time.monotonic()
    try:
        source, fn = find_kernel(workdir, files, str(options.get("kernel", "")))
    except SourceError as e:
        build.ok = False
        build.diagnostics.append(e.diagnostic)
        return build
    signature, constexprs = signature_of(fn, dict(options.get("signature", {})),
                                         dict(options.get("constants", {})))
    num_warps = int(options.get("num_warps") or 4)
    num_stages = int(options.get("num_stages") or 3)
    if num_warps not in (1, 2, 4, 8, 16, 32):
        raise ToolInputError(f"num_warps must be a power of two from 1 to 32, got {num_warps}")
    out_dir = workdir / "build"
    out_dir.mkdir(exist_ok=True)
    for arch in archs:
        build.commands.append(
            f"triton.compile(ASTSource({fn.__name__}, {signature}, {constexprs}), "
            f"target=GPUTarget('cuda', {capability(arch)}, 32), num_warps={num_warps}, "
            f"num_stages={num_stages})"
        )
        try:
            compiled = triton.compile(
                ASTSource(fn, signature, constexprs=constexprs),
                target=GPUTarget("cuda", capability(arch), 32),
                options={"num_warps": num_warps, "num_stages": num_stages},
            )
        except CompilationError as e:
            build.ok = False
            build.diagnostics.append(_triton_diagnostic(e, workdir, source, fn))
            break
        stem = f"{fn.__name__}.{arch}"
        for kind in _ASM_KINDS:
            path = out_dir / f"{stem}.{kind}"
            path.write_text(compiled.asm[kind])
            build.artifacts.append(artifact(path, kind, arch, include_text))
        cubin = out_dir / f"{stem}.cubin"
        cubin.write_bytes(compiled.asm["cubin"])
        build.artifacts.append(artifact(cubin, "cubin", arch, include_text))
        ptx = out_dir / f"{stem}.ptx"
        # Triton may target the arch-specific variant (sm_90a): assemble for what the PTX says.
        target = re.search(r"^\.target\s+(sm_\w+)", compiled.asm["ptx"], re.MULTILINE)
        ptx_arch = target.group(1) if target else arch
        proc = subprocess.run([_ptxas(arch), f"-arch={ptx_arch}", "-v", str(ptx), "-o", "/dev/null"],
                              capture_output=True, text=True, timeout=COMPILER_TIMEOUT_S)
        for kernel in parse_ptxas_verbose(proc.stdout + proc.stderr):
            kernel.update(num_warps=compiled.metadata.num_warps,
                          num_stages=compiled.metadata.num_stages)
            kernel["shared_bytes"] = max(kernel.get("shared_bytes", 0), compiled.metadata.shared)
            build.kernels.append(kernel)
        build.binaries.append(BuiltBinary(arch, cubin, ptx, source))
    build.compile_ms = int((time.monotonic() - started) * 1000)
    return build


def _triton_diagnostic(error: Exception, workdir: Path, source: str, fn: Any) -> dict[str, Any]:
    """Maps a CompilationError (line relative to the kernel's `def`) to a line in the file."""
    node = getattr(error, "node", None)
    rel_line = getattr(node, "lineno", 0) or 0
    def_line = 0
    pattern = re.compile(rf"^\s*def\s+{re.escape(fn.__name__)}\b")
    for number, text in enumerate((workdir / source).read_text().splitlines(), start=1):
        if pattern.match(text):
            def_line = number
            break
    line = def_line + rel_line - 1 if rel_line and def_line else rel_line
    message = str(error).strip().splitlines()
    return {
        "file": source,
        "line": line,
        "column": (getattr(node, "col_offset", 0) or 0) + 1 if node is not None else 0,
        "severity": "error",
        "message": message[-1] if message else type(error).__name__,
    }
