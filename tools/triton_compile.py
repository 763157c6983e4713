"""Triton kernels compiled ahead of time for a target architecture, with no GPU present.

`triton.compile(ASTSource(fn, signature, constexprs), target=GPUTarget("cuda", cap, 32))` runs
the whole pipeline (TTIR -> TTGIR -> LLIR -> PTX -> cubin) on the CPU. Resource use comes from
running Triton's own ptxas with -v on the PTX it produced (the CompiledKernel only learns its
register count from a live driver).

Importing the module runs the submission's code, so the import and `triton.compile` run in a
confined child (`perfbox.tools.untrusted`) that writes the compiler's files to build/ and
reports a small checked JSON object; this process then reads the files itself, checks the PTX
(the arch asked for, one entry named after the kernel), assembles the cubin from it with ptxas
and takes kernels and resource figures from that run. What stays the module's to decide: the
PTX itself. A module runs in the process that runs the compiler, so it can hand the compiler's
output a substitute; a Triton compile's OK therefore says "this PTX for this kernel name
assembles, with these figures", never that the source is correct (check and bench run and
verify the code). A compile that reads only the kernel's source, with no module code run, would
close that; it would also refuse the many modules that compute constants or helpers at import.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import stat
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from perfbox.tools import untrusted
from perfbox.tools.build import COMPILER_TIMEOUT_S, Build, BuiltBinary, artifact
from perfbox.tools.ptxas import parse_ptxas_verbose
from perfbox.tools.types import ToolInputError

_ASM_KINDS = ("ttir", "ttgir", "llir", "ptx")
MAX_ARTIFACT_BYTES = 256 << 20  # one compiler output file the child wrote
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,199}$")


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
    build = Build(ok=True)
    started = time.monotonic()
    num_warps = int(options.get("num_warps") or 4)
    num_stages = int(options.get("num_stages") or 3)
    if num_warps not in (1, 2, 4, 8, 16, 32):
        raise ToolInputError(f"num_warps must be a power of two from 1 to 32, got {num_warps}")
    out_dir = workdir / "build"
    out_dir.mkdir(exist_ok=True)
    end = untrusted.run_confined(lambda: _compile_in_child(
        workdir, files, archs, options, num_warps, num_stages, out_dir))
    if end.report is None or end.signal:
        module = next((f for f in files if f.endswith(".py")), "the module")
        raise untrusted.how_it_ended(end, f"importing {module} or compiling its kernel")
    try:
        _adopt(build, end.report, workdir, files, archs, out_dir, include_text)
    except untrusted.UntrustedReportError as e:
        raise untrusted.SubmissionEnded(
            f"the process importing the module sent a malformed report ({e}); the module "
            "interfered with the compiler") from e
    build.compile_ms = int((time.monotonic() - started) * 1000)
    return build


def warm_up(workdir: Path, name: str) -> None:
    """Compiles a bundled (trusted) kernel in this process, so that processes forked from it
    inherit an initialised Triton/MLIR/LLVM; the worker calls it once at start."""
    out_dir = workdir / "build"
    out_dir.mkdir(exist_ok=True)
    report = _compile_in_child(workdir, [name], ["sm_90"], {}, 4, 3, out_dir)
    if report.get("kind") != "compiled":
        raise RuntimeError(f"the warm-up compile failed: {str(report)[:300]}")


def _compile_in_child(workdir: Path, files: list[str], archs: list[str],
                      options: dict[str, Any], num_warps: int, num_stages: int,
                      out_dir: Path) -> dict[str, Any]:
    """Runs in the confined child: import, compile, write the files; report what was done."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.compiler.errors import CompilationError

    from perfbox.tools.archs import capability

    try:
        source, fn = find_kernel(workdir, files, str(options.get("kernel", "")))
        signature, constexprs = signature_of(fn, dict(options.get("signature", {})),
                                             dict(options.get("constants", {})))
    except SourceError as e:
        return {"kind": "diagnostic", "diagnostic": e.diagnostic}
    except ToolInputError as e:
        return {"kind": "input_error", "message": str(e)}
    compiled_archs = []
    for arch in archs:
        try:
            compiled = triton.compile(
                ASTSource(fn, signature, constexprs=constexprs),
                target=GPUTarget("cuda", capability(arch), 32),
                options={"num_warps": num_warps, "num_stages": num_stages},
            )
        except CompilationError as e:
            return {"kind": "diagnostic",
                    "diagnostic": _triton_diagnostic(e, workdir, source, fn)}
        stem = f"{fn.__name__}.{arch}"
        for kind in _ASM_KINDS:
            (out_dir / f"{stem}.{kind}").write_text(compiled.asm[kind])
        (out_dir / f"{stem}.cubin").write_bytes(compiled.asm["cubin"])
        compiled_archs.append({"arch": arch, "num_warps": compiled.metadata.num_warps,
                               "num_stages": compiled.metadata.num_stages,
                               "shared": compiled.metadata.shared})
    return {"kind": "compiled", "source": source, "kernel": fn.__name__,
            "signature": str(signature), "constexprs": repr(constexprs),
            "archs": compiled_archs}


def _adopt(build: Build, report: dict[str, Any], workdir: Path, files: list[str],
           archs: list[str], out_dir: Path, include_text: bool) -> None:
    """Turns the child's report into the build, checking every field and reading every file
    here; raises UntrustedReportError when the report is not one the child could honestly
    have written."""
    kind = untrusted.text(report, "kind")
    if kind == "input_error":
        raise ToolInputError(untrusted.text(report, "message"))
    if kind == "diagnostic":
        build.ok = False
        build.diagnostics.append(_checked_diagnostic(report.get("diagnostic"), files))
        return
    if kind != "compiled":
        raise untrusted.UntrustedReportError(f"unknown report kind {kind[:40]!r}")
    source, kernel = untrusted.text(report, "source"), untrusted.text(report, "kernel")
    if source not in files or not _NAME_RE.match(kernel):
        raise untrusted.UntrustedReportError("source or kernel name out of range")
    entries = report.get("archs")
    if not isinstance(entries, list) or [e.get("arch") if isinstance(e, dict) else None
                                         for e in entries] != archs:
        raise untrusted.UntrustedReportError("the compiled archs are not the requested ones")
    for entry in entries:
        _adopt_arch(build, entry, report, source, kernel, out_dir, include_text)
        if not build.ok:
            return


def _adopt_arch(build: Build, entry: dict[str, Any], report: dict[str, Any], source: str,
                kernel: str, out_dir: Path, include_text: bool) -> None:
    from perfbox.tools.archs import capability

    arch = str(entry["arch"])
    num_warps = untrusted.integer(entry, "num_warps", 1, 32)
    num_stages = untrusted.integer(entry, "num_stages", 0, 64)
    shared = untrusted.integer(entry, "shared", 0, 1 << 24)
    build.commands.append(
        f"triton.compile(ASTSource({kernel}, {untrusted.text(report, 'signature', 2000)}, "
        f"{untrusted.text(report, 'constexprs', 2000)}), target=GPUTarget('cuda', "
        f"{capability(arch)}, 32), num_warps={num_warps}, num_stages={num_stages})")
    stem = f"{kernel}.{arch}"
    for kind in (*_ASM_KINDS, "cubin"):
        _check_file(out_dir / f"{stem}.{kind}")
    ptx = out_dir / f"{stem}.ptx"
    text = ptx.read_text(errors="replace")
    # Triton may target the arch-specific variant (sm_90a): assemble for what the PTX says,
    # which must be the arch asked for; and Triton names the one entry after the kernel
    target = re.search(r"^\.target\s+(sm_\w+)", text, re.MULTILINE)
    ptx_arch = target.group(1) if target else arch
    entries = re.findall(r"^\s*\.(?:visible\s+)?\.entry\s+(\w+)", text, re.MULTILINE)
    if ptx_arch.rstrip("af") != arch or entries != [kernel]:
        raise untrusted.UntrustedReportError(
            f"the PTX for {arch} targets {ptx_arch} with entries {entries[:4]}, not {kernel}")
    import subprocess

    cubin = out_dir / f"{stem}.cubin"
    cubin.unlink()  # the cubin reported is the one ptxas makes here from the PTX, never the
    # child's file: the binary, its resource figures and the PTX always agree
    proc = subprocess.run([_ptxas(arch), f"-arch={ptx_arch}", "-v", str(ptx), "-o", str(cubin)],
                          capture_output=True, text=True, timeout=COMPILER_TIMEOUT_S)
    if proc.returncode != 0 or not cubin.is_file():
        build.ok = False
        first = next((line for line in (proc.stderr + proc.stdout).splitlines()
                      if "error" in line.lower()), "ptxas failed")
        build.diagnostics.append({"file": "?", "line": 0, "column": 0, "severity": "error",
                                  "message": f"ptxas rejected the PTX for {arch}: {first[:500]}"})
        return
    for found in parse_ptxas_verbose(proc.stdout + proc.stderr):
        found.update(num_warps=num_warps, num_stages=num_stages)
        found["shared_bytes"] = max(found.get("shared_bytes", 0), shared)
        build.kernels.append(found)
    for kind in (*_ASM_KINDS, "cubin"):
        build.artifacts.append(artifact(out_dir / f"{stem}.{kind}", kind, arch, include_text))
    build.binaries.append(BuiltBinary(arch, cubin, ptx, source))


def _check_file(path: Path) -> None:
    """A regular file (not a link the child planted), of a size a compiler writes."""
    try:
        info = os.lstat(path)
    except OSError as e:
        raise untrusted.UntrustedReportError(f"{path.name} was not written") from e
    if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_ARTIFACT_BYTES:
        raise untrusted.UntrustedReportError(f"{path.name} is not a compiler output file")


def _checked_diagnostic(value: Any, files: list[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise untrusted.UntrustedReportError("the diagnostic is not an object")
    where = untrusted.text(value, "file", 1000)
    return {"file": where if where in files else "?",
            "line": untrusted.integer(value, "line", 0, 1 << 24),
            "column": untrusted.integer(value, "column", 0, 1 << 24),
            "severity": "error", "message": untrusted.text(value, "message", 4000)}


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
