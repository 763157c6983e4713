"""Helpers of the measurement attack suite: KernelBench problems, honest submissions, and one
call of check or bench in a fresh interpreter (the tools fork; forking pytest is unreliable)."""

from __future__ import annotations

import shutil
from pathlib import Path

from perfbox.tools.types import ToolOutcome
from tests.tools.isolated import run_tool_isolated

LEVEL1 = Path(__file__).resolve().parents[1] / "fixtures" / "kernelbench" / "level1"

# problem file -> (ModelNew's __init__ arguments and body, forward body): honest rewrites
HONEST = {
    "relu.py": ("", "return torch.clamp_min(x, 0.0)"),
    "softmax.py": ("", "e = (x - x.amax(dim=1, keepdim=True)).exp()\n"
                       "return e / e.sum(dim=1, keepdim=True)"),
    "gelu.py": ("", "return 0.5 * x * (1.0 + torch.erf(x * 0.7071067811865476))"),
    "rmsnorm.py": ("num_features, eps=1e-5", "return x * torch.rsqrt(x.pow(2).mean(dim=1, "
                   "keepdim=True) + self.eps)"),
    "sum_dim.py": ("dim", "return x.sum(dim=self.dim, keepdim=True)"),
}


def model_new(init_args: str, forward: str, prelude: str = "", init_body: str = "") -> str:
    """A ModelNew source: `init_args` are stored as attributes of the same names."""
    names = [a.split("=")[0].strip() for a in init_args.split(",") if a.strip()]
    stores = "".join(f"        self.{n} = {n}\n" for n in names)
    body = "".join(f"        {line}\n" for line in forward.strip().splitlines())
    extra = "".join(f"        {line}\n" for line in init_body.strip().splitlines())
    return (f"import torch\nimport torch.nn as nn\n{prelude}\n\n"
            f"class ModelNew(nn.Module):\n    def __init__(self{', ' if init_args else ''}"
            f"{init_args}):\n        super().__init__()\n{stores}{extra}\n"
            f"    def forward(self, x):\n{body}")


def honest(problem: str, prelude: str = "", forward: str | None = None,
           init_body: str = "") -> str:
    init_args, body = HONEST[problem]
    return model_new(init_args, forward if forward is not None else body, prelude, init_body)


def variant(problem: str, old: str, new: str) -> str:
    """A level-1 problem's source with one piece replaced (a reference of another kind)."""
    source = (LEVEL1 / problem).read_text()
    assert old in source, (problem, old)
    return source.replace(old, new)


def run(tmp_path: Path, tool: str, problem: str, submission: str,
        **options: object) -> ToolOutcome:
    """check or bench of `submission` against a reference: a level-1 problem's file name, or a
    reference's source text."""
    if "\n" in problem:
        (tmp_path / "reference.py").write_text(problem)
    else:
        shutil.copy(LEVEL1 / problem, tmp_path / "reference.py")
    (tmp_path / "new.py").write_text(submission)
    if tool == "bench":
        options = {"time_budget_s": 1.5, "min_samples": 6, **options}
    return run_tool_isolated(tmp_path, ["new.py", "reference.py"], {"tool": tool, **options})
