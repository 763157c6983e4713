"""check: KernelBench ModelNew against Model, in-process (the service path is in tests/security)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from perfbox import tools
from perfbox.tools.types import Status, ToolInputError, ToolOutcome
from tests.tools.isolated import run_tool_isolated

REFERENCE = Path(__file__).resolve().parents[1] / "fixtures" / "kernelbench" / "reference.py"

HEADER = "import torch\nimport torch.nn as nn\n\n\nclass ModelNew(nn.Module):\n" \
         "    def __init__(self, features):\n        super().__init__()\n" \
         "        self.linear = nn.Linear(features, features)\n\n    def forward(self, x):\n"


def submission(body: str) -> str:
    return HEADER + "".join(f"        {line}\n" for line in body.strip().splitlines())


def check(tmp_path: Path, body: str, **options: object) -> ToolOutcome:
    shutil.copy(REFERENCE, tmp_path / "reference.py")
    (tmp_path / "new.py").write_text(submission(body))
    return run_tool_isolated(tmp_path, ["new.py", "reference.py"], dict(options))


def test_equivalent_implementation_passes(tmp_path: Path) -> None:
    out = check(tmp_path, "return torch.clamp_min(x @ self.linear.weight.t() + self.linear.bias, 0)")
    assert out.status == Status.OK, out.summary
    report = out.report
    # 5 sets from the problem's get_inputs, 5 sign-varied and scaled
    assert report["passed"] and report["num_input_sets"] == 10 and report["deterministic"]
    assert len(report["outputs"]) == 10 and all(o["passed"] for o in report["outputs"])
    assert all(o["norm_rel_error"] < 1e-4 for o in report["outputs"])


def test_small_error_beyond_tolerance_is_wrong_with_statistics(tmp_path: Path) -> None:
    out = check(tmp_path, "return torch.relu(self.linear(x)) * 1.001 + 1e-3")
    assert out.status == Status.WRONG_ANSWER
    (entry,) = out.report["outputs"]
    assert entry["problem"] == "values" and 0 < entry["mismatch_fraction"] <= 1
    assert entry["max_abs_error"] > 1e-4 and len(entry["first_mismatch_index"]) == 2


def test_tolerance_can_be_widened(tmp_path: Path) -> None:
    out = check(tmp_path, "return torch.relu(self.linear(x)) * (1 + 1e-3)",
                tolerances={"float32": 1e-2})
    assert out.status == Status.OK, out.summary


@pytest.mark.parametrize("body, problem", [
    ("return torch.relu(self.linear(x))[:, :16]", "shape"),
    ("return torch.relu(self.linear(x)).double()", "dtype"),
    ("y = torch.relu(self.linear(x))\ny[0, 0] = float('nan')\nreturn y", "nan"),
    ("y = torch.relu(self.linear(x))\ny[3, 1] = float('inf')\nreturn y", "inf"),
])
def test_structural_problems_are_named(tmp_path: Path, body: str, problem: str) -> None:
    out = check(tmp_path, body)
    assert out.status == Status.WRONG_ANSWER
    assert out.report["outputs"][-1]["problem"] == problem
    assert problem in out.summary or problem in out.report["reason"] or problem == "nan" \
        or problem == "inf"


def test_raising_submission_is_a_runtime_error(tmp_path: Path) -> None:
    out = check(tmp_path, "raise ValueError('boom')")
    assert out.status == Status.RUNTIME_ERROR and "boom" in out.summary


def test_a_submission_that_is_not_python_is_a_compile_error_with_its_line(tmp_path: Path
                                                                         ) -> None:
    """The tool compiles the module itself: the status and line are its verdict, not a
    message the submission raised (a raised SyntaxError stays a runtime error)."""
    out = check(tmp_path, "return x +* 2")
    assert out.status == Status.COMPILE_ERROR, out.summary
    assert "does not compile" in out.summary and "new.py, line 11" in out.summary
    raised = check(tmp_path, "raise SyntaxError('forged')")
    assert raised.status == Status.RUNTIME_ERROR


def test_a_submission_that_will_not_exit_after_done_costs_at_most_the_grace(tmp_path: Path
                                                                            ) -> None:
    """The tool waits for the submission's process to exit by itself after "done" (so its
    prints are flushed), but only briefly: one whose exit hangs is killed."""
    import time

    shutil.copy(REFERENCE, tmp_path / "reference.py")
    stall = ("import sys, time\n\n\nclass _Stall:\n    def write(self, text):\n"
             "        return len(text)\n\n    def flush(self):\n        time.sleep(60)\n\n\n"
             "sys.stdout = _Stall()\n")
    (tmp_path / "new.py").write_text(stall + submission("return torch.relu(self.linear(x))"))
    started = time.monotonic()
    out = run_tool_isolated(tmp_path, ["new.py", "reference.py"], {})
    assert out.status == Status.OK, out.summary
    assert time.monotonic() - started < 30


def test_missing_reference_names_the_option(tmp_path: Path) -> None:
    with pytest.raises(ToolInputError, match="reference_file"):
        tools.validate("check", "kernelbench", ["new.py"], {})
    with pytest.raises(ToolInputError, match="num_input_sets"):
        tools.validate("check", "kernelbench", ["new.py", "reference.py"],
                       {"num_input_sets": 1000})


@pytest.mark.gpu
def test_check_on_the_gpu(tmp_path: Path) -> None:
    out = check(tmp_path, "return torch.relu(self.linear(x))", device="cuda")
    assert out.status == Status.OK, out.summary
    assert out.report["device"] == "cuda"


def test_cuda_device_without_a_gpu_is_unavailable_here(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    out = check(tmp_path, "return torch.relu(self.linear(x))", device="cuda")
    assert out.status == Status.UNAVAILABLE_HERE and "GPU" in out.summary
