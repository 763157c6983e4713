"""The layering the README promises, read from the source: no import cycle among perfbox's
modules at import time, `tools` never imports `sandbox`, and `inference` reaches the tool
service only through the client (no `sandbox` import). Imports inside functions and under
TYPE_CHECKING are lazy by design and not counted."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"perfbox": ROOT / "perfbox", "perfbox.sandbox": ROOT / "sandbox",
            "perfbox.tools": ROOT / "tools", "perfbox.inference": ROOT / "inference"}


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = [p for p in path.relative_to(folder).with_suffix("").parts if p != "__init__"]
            name = ".".join([package, *parts])
            if not name.startswith("perfbox.api."):  # generated stubs
                found[name] = path
    return found


def _eager_imports(tree: ast.Module) -> set[str]:
    """Modules imported when the module is: its top level, try and if blocks included, but
    not `if TYPE_CHECKING:`."""
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for n in ast.walk(node) if isinstance(node, (ast.If, ast.Try)) else [node]:
            if isinstance(n, ast.Import):
                names |= {a.name for a in n.names}
            elif isinstance(n, ast.ImportFrom) and n.module:
                names |= {n.module} | {f"{n.module}.{a.name}" for a in n.names}
    return names


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: {m for m in _eager_imports(ast.parse(path.read_text())) if m in modules
                   and m != name and not name.startswith(m + ".")}
            for name, path in modules.items()}


def test_no_import_cycle() -> None:
    graphlib.TopologicalSorter(_graph()).prepare()  # raises CycleError naming the cycle


def test_tools_never_import_the_sandbox_and_inference_only_the_client() -> None:
    graph = _graph()
    assert len(graph) > 100  # the tree was read
    wrong = [(m, d) for m, deps in graph.items() for d in deps if d.startswith("perfbox.sandbox")
             and m.startswith(("perfbox.tools", "perfbox.inference"))]
    assert not wrong, wrong
