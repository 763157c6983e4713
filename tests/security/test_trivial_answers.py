"""Correctness that trivial answers cannot pass: zeros, a constant, or the input returned as
is must fail on KernelBench's own problems and distributions, and a problem whose outputs a
trivial answer matches on every input set fails whatever is submitted, saying why."""

from __future__ import annotations

from pathlib import Path

from perfbox.tools.types import Status
from tests.security.problems import honest, model_new, run

DEGENERATE = '''import torch
import torch.nn as nn


class Model(nn.Module):
    """Always zero: relu of a negated softplus (a degenerate problem)."""

    def forward(self, x):
        return torch.relu(-torch.nn.functional.softplus(x))


def get_inputs():
    return [torch.randn(64, 64)]


def get_init_inputs():
    return []
'''


def test_zeros_do_not_pass_softmax_over_16384_columns(tmp_path: Path) -> None:
    # every probability is ~6e-5: an absolute floor of 1e-4 let zeros through
    out = run(tmp_path, "check", "softmax.py", honest("softmax.py", forward="return torch.zeros_like(x)"))
    assert out.status == Status.WRONG_ANSWER, out.summary


def test_a_constant_does_not_pass_softmax(tmp_path: Path) -> None:
    out = run(tmp_path, "check", "softmax.py",
              honest("softmax.py", forward="return torch.full_like(x, 1.0 / x.shape[1])"))
    assert out.status == Status.WRONG_ANSWER, out.summary


def test_returning_the_input_does_not_pass_relu_of_rand(tmp_path: Path) -> None:
    # torch.rand inputs are all positive: relu(x) == x on them; the varied inputs are not
    out = run(tmp_path, "check", "relu.py", honest("relu.py", forward="return x.clone()"))
    assert out.status == Status.WRONG_ANSWER, out.summary
    assert "varied" in out.summary
    assert any("trivial answer (input)" in w for w in out.report["warnings"])


def test_without_varied_inputs_the_degenerate_check_still_fails_it(tmp_path: Path) -> None:
    out = run(tmp_path, "check", "relu.py", honest("relu.py", forward="return x.clone()"),
              input_distributions=["problem"])
    assert out.status == Status.WRONG_ANSWER, out.summary
    assert "trivial answer (input)" in out.summary


def test_a_degenerate_problem_fails_every_submission_and_says_why(tmp_path: Path) -> None:
    out = run(tmp_path, "check", DEGENERATE, model_new("", "return torch.zeros_like(x)"))
    assert out.status == Status.WRONG_ANSWER
    assert "degenerate" in out.summary and "zeros" in out.summary


def test_honest_softmax_still_passes(tmp_path: Path) -> None:
    out = run(tmp_path, "check", "softmax.py", honest("softmax.py"))
    assert out.status == Status.OK, out.summary
    assert all(o["norm_rel_error"] < 1e-5 for o in out.report["outputs"])


def test_bench_does_not_time_a_kernel_right_only_on_the_problems_inputs(tmp_path: Path) -> None:
    out = run(tmp_path, "bench", "relu.py", honest("relu.py", forward="return x.clone()"))
    assert out.status == Status.WRONG_ANSWER and "not timed" in out.summary
    assert "varied" in out.summary
