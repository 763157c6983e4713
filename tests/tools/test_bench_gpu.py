"""bench on the GPU path: CUDA events with the L2 flushed before every call, NVML conditions,
the tool's clock checking the events, timed outputs verified; and the GPU cheats (work left on
a side stream, forged timers, outputs cached by pointer) ending non-OK with the reason."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from perfbox.tools.types import Status
from tests.tools.isolated import run_tool_isolated

REFERENCE = Path(__file__).resolve().parents[1] / "fixtures" / "kernelbench" / "reference.py"
HEADER = """import torch
import torch.nn as nn


class ModelNew(nn.Module):
    def __init__(self, features):
        super().__init__()
        self.linear = nn.Linear(features, features)
"""
pytestmark = pytest.mark.gpu


def bench(tmp_path: Path, body: str, prelude: str = "", **options: object):
    shutil.copy(REFERENCE, tmp_path / "reference.py")
    (tmp_path / "new.py").write_text(prelude + HEADER + body)
    return run_tool_isolated(tmp_path, ["new.py", "reference.py"],
                             {"tool": "bench", "device": "cuda", "time_budget_s": 2.0,
                              **options})


HONEST = """
    def forward(self, x):
        return torch.relu(self.linear(x))
"""


def test_gpu_bench_reports_events_conditions_and_verification(tmp_path: Path) -> None:
    out = bench(tmp_path, HONEST)
    assert out.status == Status.OK, out.summary
    r = out.report
    assert r["clock"] == "cuda-events" and r["device"] == "cuda"
    assert r["l2FlushBytes"] >= 2 * 40 * 2**20  # twice an H100/H200 L2 at least
    assert r["verifiedOutputs"] >= 1 and r["gpu"]["samples"] >= 2
    assert r["gpu"]["smClockMhzMax"] > 0 and r["gpu"]["gpuName"]
    assert 0.5 < r["speedup"] < 2.0  # the same computation as the reference
    assert r["submission"]["num_samples"] >= 10


def test_work_left_on_a_side_stream_is_caught(tmp_path: Path) -> None:
    body = HEADER.replace("self.linear = nn.Linear(features, features)",
                          "self.linear = nn.Linear(features, features)\n"
                          "        self.side = torch.cuda.Stream()\n"
                          "        self.big = torch.randn(4096, 4096, device='cuda') / 64")
    (tmp_path / "x").mkdir()
    shutil.copy(REFERENCE, tmp_path / "x" / "reference.py")
    (tmp_path / "x" / "new.py").write_text(body + """
    def forward(self, x):
        y = torch.relu(self.linear(x))
        with torch.cuda.stream(self.side):
            for _ in range(10):
                self.big = torch.tanh(self.big @ self.big)
        return y
""")
    out = run_tool_isolated(tmp_path / "x", ["new.py", "reference.py"],
                            {"tool": "bench", "device": "cuda", "time_budget_s": 2.0})
    assert out.status == Status.RUNTIME_ERROR, out.summary
    assert "work outside the timed region" in out.summary


def test_patched_events_and_synchronize_change_nothing(tmp_path: Path) -> None:
    prelude = """import torch
torch.cuda.Event.elapsed_time = lambda self, other: 0.0001
torch.cuda.synchronize = lambda *a, **k: None
torch.cuda.Event.record = lambda self, stream=None: None
"""
    out = bench(tmp_path, HONEST, prelude)
    assert out.status == Status.OK, out.summary
    assert out.report["submission"]["median_us"] > 1.0  # not the forged 0.1 us


def test_output_cached_by_input_pointer_is_caught(tmp_path: Path) -> None:
    cheat = """
    def forward(self, x):
        cache = self.__dict__.setdefault("cache", {})
        if x.data_ptr() not in cache:
            cache[x.data_ptr()] = torch.relu(self.linear(x))
        return cache[x.data_ptr()]
"""
    out = bench(tmp_path, cheat)
    assert out.status == Status.WRONG_ANSWER, out.summary
