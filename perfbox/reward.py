"""A correctness-gated speedup reward from perfbox's `check` and `bench` results.

The reward is computed only from what the measurement tools established, and refuses what they
flag: a submission `check` flagged statically (a fallback to the reference, no custom kernel, a
patched timer...) earns nothing; a `bench` carrying a measurement flag (noisy, contended,
output_reused, implausible...) or ending IMPLAUSIBLE earns no speedup term; and the breakdown
says which rule applied. Presets follow the formulas RL-for-kernels work has published, with
their weights configurable:

- `correct_speedup` (default): `correct` for passing check, plus `speedup_weight` times the
  speedup, capped (the correctness-plus-speedup form, e.g. Kevin's 0.3 + speedup);
- `tiers`: compiled (ran but wrong) < correct < faster than the reference (the tiered rewards
  of Triton RL work);
- `fast_p`: 1 for a correct kernel at least `threshold` times faster, else 0 (KernelBench's
  fast_p as a reward).

Multi-turn: the reward of a kernel found at turn t (1-based) is discounted by gamma^(t-1).
Usable standalone: `score(check_result, bench_result)` on results a client already has, or
`evaluate(client, reference, candidate)` to run check and bench on a tool service first.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from perfbox.api.v1 import tools_pb2 as pb

SUBMISSION_FILE = "new.py"
REFERENCE_FILE = "reference.py"
_FENCE_INFO = re.compile(r"(?:python|py)?\n")
FENCE = "```"


def last_model_block(text: str) -> str | None:
    """The last fenced Python block defining ModelNew in text the model wrote, else None: the
    kernel a completion ends with when it never passed one to a tool. One linear pass over the
    fences (a lazy regex is quadratic in unclosed fences, which a model can write)."""
    found, at = None, 0
    while (start := text.find(FENCE, at)) >= 0:
        info = _FENCE_INFO.match(text, start + len(FENCE))
        if info is None:  # a fence of another language, or inline: not a block opener
            at = start + len(FENCE)
            continue
        end = text.find(FENCE, info.end())
        if end < 0:
            break
        block = text[info.end():end]
        if "ModelNew" in block:
            found = block
        at = end + len(FENCE)
    return found


@dataclass(frozen=True)
class Preset:
    """How results become a number; every weight is configurable (`dataclasses.replace`)."""

    name: str
    form: str  # "linear": speedup_weight * min(speedup, cap); "tiers"; "threshold" (fast_p)
    correct: float = 0.0  # for passing check
    compiled: float = 0.0  # for a kernel that ran but failed check (WRONG_ANSWER)
    speedup_weight: float = 1.0  # linear form: per unit of speedup; tiers: for beating 1x
    speedup_cap: float = 10.0  # speedups above this count as this
    threshold: float = 1.0  # fast_p's p; tiers: the speedup that earns the top tier
    # the speedup counts only when its 95% interval lies above 1 (or, for threshold, above p)
    require_significant: bool = True
    gamma: float = 1.0  # discount per extra turn
    # added for a failed check, by status (COMPILE_ERROR, WRONG_ANSWER, TIMEOUT...)
    penalties: dict[str, float] = field(default_factory=lambda: {
        "COMPILE_ERROR": 0.0, "RUNTIME_ERROR": 0.0, "WRONG_ANSWER": 0.0, "TIMEOUT": 0.0,
        "MEMORY_LIMIT": 0.0, "OUTPUT_LIMIT": 0.0, "IMPLAUSIBLE": -1.0})


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("correct_speedup", "linear", correct=0.3, speedup_weight=1.0, speedup_cap=10.0),
    Preset("tiers", "tiers", correct=0.5, compiled=0.1, speedup_weight=0.5, threshold=1.0),
    Preset("fast_p", "threshold", threshold=1.0, speedup_weight=1.0),
)}
DEFAULT_PRESET = "correct_speedup"


@dataclass
class Reward:
    """The reward and why it is what it is."""

    total: float
    correct: bool  # check passed without a flag
    correctness: float = 0.0  # the correctness (or compiled) term
    speedup: float = 0.0  # the measured speedup (0 when not measured or refused)
    speedup_term: float = 0.0  # what the speedup added
    penalty: float = 0.0  # added for a failed check or an implausible bench
    discount: float = 1.0  # gamma^(turn - 1)
    preset: str = DEFAULT_PRESET
    refused: list[str] = field(default_factory=list)  # rules that withheld a term, and why

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def preset(name_or_preset: str | Preset | bool = True, **overrides: Any) -> Preset:
    """A preset by name (True: the default), with any field overridden."""
    if isinstance(name_or_preset, Preset):
        chosen = name_or_preset
    else:
        name = DEFAULT_PRESET if name_or_preset is True else str(name_or_preset)
        if name not in PRESETS:
            raise ValueError(f"unknown reward preset {name!r}; choose one of "
                             f"{', '.join(PRESETS)}")
        chosen = PRESETS[name]
    return replace(chosen, **overrides) if overrides else chosen


def score(check: pb.ToolResult, bench: pb.ToolResult | None = None,
          how: str | Preset | bool = True, turn: int = 1) -> Reward:
    """The reward of one kernel from its check result and (when it passed) its bench result."""
    p = preset(how)
    reward = Reward(total=0.0, correct=False, preset=p.name,
                    discount=p.gamma ** max(0, turn - 1))
    if check.status != pb.OK or not check.check.passed:
        _failed_check(reward, check, p)
        return _finish(reward)
    flags = sorted({f.category for f in check.check.flags})
    if flags:
        reward.refused.append(f"check flagged the source ({', '.join(flags)}): no reward")
        return _finish(reward)
    reward.correct = True
    reward.correctness = p.correct
    if bench is not None:
        _speedup(reward, bench, p)
    return _finish(reward)


def _failed_check(reward: Reward, check: pb.ToolResult, p: Preset) -> None:
    status = pb.Status.Name(check.status)
    reward.penalty = p.penalties.get(status, 0.0)
    if check.status == pb.WRONG_ANSWER:
        reward.correctness = p.compiled  # it compiled and ran, and was wrong
    reward.refused.append(f"check did not pass ({status})")


def _speedup(reward: Reward, bench: pb.ToolResult, p: Preset) -> None:
    report = bench.bench
    if bench.status == pb.IMPLAUSIBLE:
        reward.penalty += p.penalties.get("IMPLAUSIBLE", 0.0)
        reward.refused.append("bench found the figures implausible: no speedup term")
        return
    if bench.status != pb.OK:
        reward.refused.append(f"bench did not measure ({pb.Status.Name(bench.status)})")
        return
    if report.measurement_flags:
        reward.refused.append("bench flagged the measurement "
                              f"({', '.join(report.measurement_flags)}): no speedup term")
        return
    if {f.category for f in report.flags}:
        reward.refused.append("bench flagged the source: no speedup term")
        return
    speedup = report.speedup if math.isfinite(report.speedup) else 0.0
    reward.speedup = speedup
    low = report.speedup_ci_low if report.speedup_ci_low > 0 else speedup
    reward.speedup_term = _speedup_term(speedup, low, p, reward.refused)


def _speedup_term(speedup: float, low: float, p: Preset, refused: list[str]) -> float:
    capped = min(speedup, p.speedup_cap)
    if p.form == "linear":
        return p.speedup_weight * capped
    bar = p.threshold
    if p.require_significant and low <= bar:
        refused.append(f"speedup {speedup:.3g}x: its 95% interval reaches {low:.3g}x, not above "
                       f"{bar:g}x")
        return 0.0
    if speedup < bar:
        return 0.0
    return p.speedup_weight


def _finish(reward: Reward) -> Reward:
    reward.total = reward.discount * (reward.correctness + reward.speedup_term) + reward.penalty
    return reward


def judge_request(tool: str, problem_files: dict[str, str], candidate: str,
                  submission_file: str = SUBMISSION_FILE, **options: Any) -> pb.ToolRequest:
    """The check or bench request that judges a candidate against a problem's files (a
    KernelBench reference.py, or a GPU MODE task's files) — the one form every reward path
    uses. Raises ValueError (UnicodeError included) for text protobuf cannot carry."""
    from perfbox.client import make_request

    return make_request(tool, {**problem_files, submission_file: candidate},
                        language="kernelbench", reference_file=REFERENCE_FILE,
                        submission_file=submission_file, **options)


def evaluate(client: Any, reference: str, candidate: str, how: str | Preset | bool = True,
             turn: int = 1, time_budget_s: float = 5.0,
             problem_files: dict[str, str] | None = None,
             submission_file: str = SUBMISSION_FILE
             ) -> tuple[Reward, pb.ToolResult, pb.ToolResult | None]:
    """Runs check, and bench when it passes, on a tool service (`perfbox.client.ToolClient`),
    then scores them. Returns (reward, check result, bench result or None). The problem is a
    KernelBench `reference`, or `problem_files` (a GPU MODE task: reference.py, task.yml,
    task.py, utils.py) with the candidate as `submission_file` (submission.py)."""
    files = problem_files or {REFERENCE_FILE: reference}
    check = client.run(judge_request("check", files, candidate, submission_file))
    bench = None
    if check.status == pb.OK and check.check.passed:
        bench = client.run(judge_request("bench", files, candidate, submission_file,
                                         time_budget_s=time_budget_s))
    return score(check, bench, how, turn), check, bench
