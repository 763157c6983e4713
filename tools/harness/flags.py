"""Static flags on a submission's source, each with the line that raised it.

A second line of defence beside the measurement (which does not rely on them): the categories
of KernelBench's static checker and KernelGuard, read from the Python AST so comments and
strings do not trigger them. The request's `hack_policy` says what a flag does: "flag" (the
default: reported, the status unchanged, a reward can refuse it) or "reject" (REJECTED before
anything runs). `require_custom_kernel` adds the "no custom kernel" flag for a ModelNew that
only calls PyTorch.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Any

POLICIES = ("flag", "reject")

_THREADING_MODULES = {"threading", "multiprocessing", "concurrent", "asyncio", "_thread",
                      "subprocess"}
_INTROSPECTION_MODULES = {"inspect", "gc", "ctypes", "traceback", "signal"}
_INTROSPECTION_ATTRS = {"_getframe", "f_back", "f_locals", "f_globals", "get_objects",
                        "get_referrers", "settrace", "setprofile", "modules"}
_PATCHED_ROOTS = {"time", "torch", "sys", "builtins", "os", "perfbox", "triton", "numpy",
                  "importlib", "gc"}
_LAZY_ATTRS = {"__torch_function__", "__torch_dispatch__", "as_subclass", "_make_subclass",
               "_make_wrapper_subclass"}
_LOW_PRECISION = {"half", "bfloat16", "float16", "allow_tf32", "set_float32_matmul_precision",
                  "autocast", "allow_fp16_reduced_precision_reduction",
                  "allow_bf16_reduced_precision_reduction"}
_CUSTOM_KERNEL_MARKERS = {"load_inline", "cpp_extension", "jit", "RawKernel", "RawModule",
                          "compile_with_cache", "ElementwiseKernel", "load"}


@dataclass(frozen=True)
class Flag:
    """One finding: which category, and where."""

    category: str  # try_fallback, no_custom_kernel, unlaunched_kernel, stream_or_thread,
    # timer_or_module_patching, introspection, lazy_tensor, precision_downgrade
    line: int  # 1-based line in the submission
    evidence: str  # the line, stripped and bounded

    def to_json(self) -> dict[str, Any]:
        return {"category": self.category, "line": self.line, "evidence": self.evidence}


def _root_name(node: ast.AST) -> str:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else ""


def scan(source: str, require_custom_kernel: bool = False) -> list[Flag]:
    """The flags of one Python source (none when it does not parse: the import will say)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    lines = source.splitlines()
    found: list[tuple[str, int]] = []
    imported: dict[str, str] = {}  # local name -> module root
    jit_functions: dict[str, int] = {}
    used_names: set[str] = set()
    custom_kernel = False
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                root = (node.module if isinstance(node, ast.ImportFrom) and node.module
                        else alias.name).split(".")[0]
                imported[(alias.asname or alias.name).split(".")[0]] = root
                if root in _THREADING_MODULES:
                    found.append(("stream_or_thread", node.lineno))
                if root in _INTROSPECTION_MODULES:
                    found.append(("introspection", node.lineno))
                if alias.name in _CUSTOM_KERNEL_MARKERS or root in ("cupy", "triton"):
                    custom_kernel = True
        elif isinstance(node, ast.Try):
            if node.handlers:
                found.append(("try_fallback", node.lineno))
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, (ast.Attribute, ast.Subscript)) and \
                        imported.get(_root_name(target), _root_name(target)) in _PATCHED_ROOTS:
                    found.append(("timer_or_module_patching", node.lineno))
        elif isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else \
                node.func.id if isinstance(node.func, ast.Name) else ""
            if name in ("setattr", "delattr") and node.args and \
                    imported.get(_root_name(node.args[0]), "") in _PATCHED_ROOTS:
                found.append(("timer_or_module_patching", node.lineno))
            if name in ("Stream", "ExternalStream", "Thread", "Process", "fork"):
                found.append(("stream_or_thread", node.lineno))
            if name in _LOW_PRECISION:
                found.append(("precision_downgrade", node.lineno))
            if name in _CUSTOM_KERNEL_MARKERS and _root_name(node.func) not in ("torch", ""):
                custom_kernel = True
            if name in ("__import__", "import_module", "exec", "eval", "compile", "vars",
                        "globals", "locals") and isinstance(node.func, ast.Name | ast.Attribute):
                found.append(("introspection", node.lineno))
            if name in ("getattr", "setattr", "delattr", "hasattr") and len(node.args) >= 2 \
                    and not isinstance(node.args[1], ast.Constant):
                found.append(("introspection", node.lineno))  # a name built at run time
        elif isinstance(node, ast.Attribute):
            if node.attr in _INTROSPECTION_ATTRS:
                found.append(("introspection", node.lineno))
            if node.attr in _LAZY_ATTRS:
                found.append(("lazy_tensor", node.lineno))
            if node.attr in _LOW_PRECISION and not isinstance(getattr(node, "ctx", None),
                                                              ast.Load | type(None)):
                found.append(("precision_downgrade", node.lineno))
            if node.attr in ("float16", "bfloat16", "half"):
                found.append(("precision_downgrade", node.lineno))
            used_names.add(node.attr)
        elif isinstance(node, ast.Name):
            used_names.add(node.id)
            if node.id in ("__builtins__", "__loader__", "__spec__"):
                found.append(("introspection", node.lineno))
        elif isinstance(node, ast.ClassDef):
            for base in node.bases:
                if isinstance(base, ast.Attribute) and base.attr == "Tensor" or \
                        isinstance(base, ast.Name) and base.id == "Tensor":
                    found.append(("lazy_tensor", node.lineno))
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name in _LAZY_ATTRS:
                    found.append(("lazy_tensor", item.lineno))
        elif isinstance(node, ast.FunctionDef):
            for decorator in node.decorator_list:
                target = decorator.func if isinstance(decorator, ast.Call) else decorator
                if isinstance(target, ast.Attribute) and target.attr in ("jit", "autotune"):
                    jit_functions[node.name] = node.lineno
                    custom_kernel = True
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                "__global__" in node.value:
            custom_kernel = True
    for name, lineno in jit_functions.items():
        if name not in used_names:
            found.append(("unlaunched_kernel", lineno))
    if require_custom_kernel and not custom_kernel:
        found.append(("no_custom_kernel", 1))
    seen: set[tuple[str, int]] = set()
    flags = []
    for category, lineno in sorted(found, key=lambda f: (f[1], f[0])):
        if (category, lineno) in seen:
            continue
        seen.add((category, lineno))
        text = lines[lineno - 1].strip() if 0 < lineno <= len(lines) else ""
        flags.append(Flag(category, lineno, text[:200]))
    return flags
