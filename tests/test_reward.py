"""perfbox.reward: correctness-gated speedup rewards that never reward what the tools flag.

The formula tests build results as the tools report them; the last test scores real check and
bench results from a real tool service.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from perfbox import reward as R
from perfbox.api.v1 import tools_pb2 as pb
from perfbox.client import ToolClient
from perfbox.sandbox.server import ToolServer

RELU = (Path(__file__).parent / "fixtures" / "kernelbench" / "level1" / "relu.py").read_text()


def check(status: int = pb.OK, passed: bool = True, flags: tuple[str, ...] = ()
          ) -> pb.ToolResult:
    result = pb.ToolResult(tool="check", status=status)
    result.check.passed = passed and status == pb.OK
    for category in flags:
        result.check.flags.add(category=category, line=3, evidence="...")
    return result


def bench(speedup: float, low: float, high: float, status: int = pb.OK,
          measurement_flags: tuple[str, ...] = ()) -> pb.ToolResult:
    result = pb.ToolResult(tool="bench", status=status)
    result.bench.speedup = speedup
    result.bench.speedup_ci_low, result.bench.speedup_ci_high = low, high
    result.bench.measurement_flags.extend(measurement_flags)
    return result


def test_correct_and_faster_earns_correctness_plus_capped_speedup() -> None:
    r = R.score(check(), bench(2.0, 1.8, 2.2))
    assert r.correct and r.total == pytest.approx(0.3 + 2.0) and not r.refused
    assert R.score(check(), bench(50.0, 45.0, 55.0)).total == pytest.approx(0.3 + 10.0)


def test_a_statically_flagged_source_earns_nothing_and_says_why() -> None:
    r = R.score(check(flags=("try_fallback",)), bench(3.0, 2.5, 3.5))
    assert r.total == 0.0 and not r.correct
    assert "try_fallback" in r.refused[0]


@pytest.mark.parametrize("flag", ["noisy", "contended", "output_reused", "implausible"])
def test_a_flagged_measurement_earns_no_speedup_term(flag: str) -> None:
    r = R.score(check(), bench(5.0, 4.0, 6.0, measurement_flags=(flag,)))
    assert r.correct and r.speedup_term == 0.0 and r.total == pytest.approx(0.3)
    assert flag in r.refused[0]


def test_an_implausible_bench_is_penalised() -> None:
    r = R.score(check(), bench(5000.0, 4000.0, 6000.0, status=pb.IMPLAUSIBLE))
    assert r.total == pytest.approx(0.3 - 1.0) and "implausible" in r.refused[0]


def test_tiers_reward_a_wrong_but_running_kernel_a_little() -> None:
    assert R.score(check(pb.WRONG_ANSWER, False), how="tiers").total == pytest.approx(0.1)
    assert R.score(check(pb.COMPILE_ERROR, False), how="tiers").total == 0.0
    assert R.score(check(), bench(1.5, 1.2, 1.8), how="tiers").total == pytest.approx(1.0)
    # faster, but not measurably: no top tier
    r = R.score(check(), bench(1.05, 0.97, 1.12), how="tiers")
    assert r.total == pytest.approx(0.5) and "not above 1x" in r.refused[0]


def test_fast_p_needs_a_significant_speedup_past_p() -> None:
    fast_2 = R.preset("fast_p", threshold=2.0)
    assert R.score(check(), bench(2.5, 2.2, 2.8), how=fast_2).total == 1.0
    assert R.score(check(), bench(2.5, 1.9, 3.1), how=fast_2).total == 0.0
    assert R.score(check(pb.WRONG_ANSWER, False), how=fast_2).total == 0.0


def test_later_turns_are_discounted_and_penalties_configurable() -> None:
    discounted = R.preset("correct_speedup", gamma=0.5)
    assert R.score(check(), bench(2.0, 1.9, 2.1), how=discounted, turn=3).total == \
        pytest.approx(0.25 * 2.3)
    harsh = R.preset("correct_speedup", penalties={"COMPILE_ERROR": -0.5})
    assert R.score(check(pb.COMPILE_ERROR, False), how=harsh).total == -0.5


def test_an_unknown_preset_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="correct_speedup, tiers, fast_p"):
        R.preset("kevin")


def test_scored_through_a_real_tool_service(server: tuple[ToolServer, int]) -> None:
    """check then bench on the session's server: a correct ReLU is rewarded with its measured
    speedup (about 1x: the same computation), a wrong one is not."""
    same = RELU.replace("Model", "ModelNew")
    wrong = same.replace("torch.relu(x)", "torch.relu(x) + 1e-2")
    with ToolClient(f"127.0.0.1:{server[1]}", timeout_s=300) as client:
        good, checked, benched = R.evaluate(client, RELU, same, time_budget_s=1.0)
        assert checked.status == pb.OK and benched is not None, checked.summary
        assert good.correct and good.correctness == pytest.approx(0.3)
        if benched.status == pb.OK and not benched.bench.measurement_flags:
            assert good.speedup == pytest.approx(benched.bench.speedup)
            assert 0.3 < good.total < 0.3 + 3.0
        else:  # a noisy or flagged measurement on a busy machine: refused, and said so
            assert good.speedup_term == 0.0 and good.refused
        bad, checked, benched = R.evaluate(client, RELU, wrong, how="tiers")
        assert checked.status == pb.WRONG_ANSWER and benched is None
        assert bad.total == pytest.approx(0.1) and not bad.correct


def test_a_gpu_mode_task_is_scored_through_its_files(server: tuple[ToolServer, int]) -> None:
    """A GPU MODE reference-kernels task: the candidate goes in as submission.py beside the
    task's files; the fixture's correct submission passes, a wrong one does not."""
    from pathlib import Path

    task = Path(__file__).parent / "fixtures" / "gpumode" / "vectoradd"
    files = {n: (task / n).read_text() for n in ("reference.py", "task.yml", "task.py",
                                                 "utils.py")}
    good_source = (task / "submission.py").read_text()
    wrong = "def custom_kernel(data):\n    a, b = data\n    return a - b\n"
    with ToolClient(f"127.0.0.1:{server[1]}", timeout_s=300) as client:
        good, checked, _ = R.evaluate(client, "", good_source, time_budget_s=1.0,
                                      problem_files=files, submission_file="submission.py")
        assert checked.status == pb.OK and good.correct, checked.summary
        bad, checked, benched = R.evaluate(client, "", wrong, problem_files=files,
                                           submission_file="submission.py")
        assert checked.status == pb.WRONG_ANSWER and benched is None and not bad.correct
