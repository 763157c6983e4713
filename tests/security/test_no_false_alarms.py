"""Zero false alarms: honest rewrites of five KernelBench level-1 problems pass check (on both
input distributions) and get an OK bench with a verified, finite speedup."""

from __future__ import annotations

from pathlib import Path

import pytest

from perfbox.tools.types import Status
from tests.security.problems import HONEST, honest, run


@pytest.mark.parametrize("problem", sorted(HONEST))
def test_honest_kernel_passes_check_and_bench(tmp_path: Path, problem: str) -> None:
    out = run(tmp_path, "check", problem, honest(problem))
    assert out.status == Status.OK, out.summary
    assert out.report["num_input_sets"] == 10 and not out.report["flags"]
    out = run(tmp_path, "bench", problem, honest(problem))
    assert out.status == Status.OK, out.summary
    report = out.report
    assert 0 < report["speedup_ci_low"] <= report["speedup"] <= report["speedup_ci_high"]
    assert report["num_rounds"] >= 30 and 8 <= report["verified_outputs"] <= report["num_rounds"]
    assert not {"implausible", "output_reused"} & set(report["measurement_flags"])
    assert report["submission_cpu_us"] > 0 and report["reference_cpu_us"] > 0
