"""check on GPU MODE reference-kernels tasks (a CPU-sized task in tests/fixtures/gpumode)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from perfbox import tools
from perfbox.tools.types import Status, ToolInputError
from tests.tools.isolated import run_tool_isolated

TASK = Path(__file__).resolve().parents[1] / "fixtures" / "gpumode" / "vectoradd"
FILES = ["reference.py", "task.yml", "task.py", "utils.py", "submission.py"]


def run_task(tmp_path: Path, submission: str | None = None):
    for name in FILES:
        shutil.copy(TASK / name, tmp_path / name)
    if submission is not None:
        (tmp_path / "submission.py").write_text(submission)
    return run_tool_isolated(tmp_path, FILES, {})


def test_correct_submission_passes_every_test_case(tmp_path: Path) -> None:
    out = run_task(tmp_path)
    assert out.status == Status.OK, out.summary
    assert out.report["num_input_sets"] == 4  # 3 tests + 1 benchmark case
    assert [o["input_set"] for o in out.report["outputs"]] == [0, 1, 2, 3]
    assert all(o["passed"] for o in out.report["outputs"])


def test_wrong_submission_fails_with_the_tasks_message(tmp_path: Path) -> None:
    out = run_task(tmp_path, "def custom_kernel(data):\n    a, b = data\n    return a - b\n")
    assert out.status == Status.WRONG_ANSWER
    assert "test 0 (size=31)" in out.summary and "max error" in out.summary


def test_published_seeds_are_not_used(tmp_path: Path) -> None:
    # answers precomputed from task.yml's seeds are wrong on the secret ones
    table = """
import torch
from reference import generate_input
CASES = {31: 4242, 64: 5236, 97: 1001}
ANSWERS = {n: sum(generate_input(n, s)) for n, s in CASES.items()}
def custom_kernel(data):
    return ANSWERS[data[0].shape[0]]
"""
    out = run_task(tmp_path, table)
    assert out.status == Status.WRONG_ANSWER


def test_missing_submission_names_the_option() -> None:
    with pytest.raises(ToolInputError, match="submission_file"):
        tools.validate("check", "kernelbench", ["reference.py", "task.yml"], {})


def test_bench_times_the_tasks_benchmark_cases(tmp_path: Path) -> None:
    for name in FILES:
        shutil.copy(TASK / name, tmp_path / name)
    out = run_tool_isolated(tmp_path, FILES, {"tool": "bench", "time_budget_s": 1.0})
    assert out.status == Status.OK, out.summary
    assert out.report["speedup"] > 0 and out.report["verified_outputs"] >= 8
    (tmp_path / "submission.py").write_text(
        "def custom_kernel(data):\n    a, b = data\n    return a + b + (a.shape[0] > 256)\n")
    out = run_tool_isolated(tmp_path, FILES, {"tool": "bench", "time_budget_s": 1.0})
    assert out.status == Status.WRONG_ANSWER and "not timed" in out.summary
