"""The Nsight Compute parser on real ncu output (tests/fixtures/ncu, recorded by
tests/fixtures/record.sh on an H100; see tests/fixtures/manifest.jsonl)."""

from __future__ import annotations

from pathlib import Path

import pytest

from perfbox.tools import ncu_report

NCU = Path(__file__).resolve().parents[1] / "fixtures" / "ncu"


def _kernels(name: str) -> list[ncu_report.KernelProfile]:
    return ncu_report.parse((NCU / f"{name}.raw.csv").read_text(),
                            (NCU / f"{name}.details.csv").read_text())


def test_memory_and_compute_bound_kernels_are_told_apart() -> None:
    stream_add, fma_loop = _kernels("profile_kernels")
    assert stream_add.name.startswith("stream_add(") and fma_loop.name.startswith("fma_loop(")
    add, fma = stream_add.to_json(), fma_loop.to_json()
    assert add["bound"] == "memory" and fma["bound"] == "compute"
    assert add["duration_us"] == pytest.approx(73.824)
    assert add["dram_throughput_pct"] > 70 and fma["sm_throughput_pct"] > 70
    assert add["block"] == "(256, 1, 1)" and add["grid"] == "(65536, 1, 1)"
    assert add["registers_per_thread"] == 16
    assert 0 < add["achieved_occupancy_pct"] <= add["theoretical_occupancy_pct"] == 100
    # roofline: a+b per element is far below the ridge point, the FMA loop far above it
    assert add["roofline"]["arithmetic_intensity"] < 1 < add["roofline"]["ridge_intensity"]
    assert fma["roofline"]["arithmetic_intensity"] > fma["roofline"]["ridge_intensity"]


def test_warp_stalls_and_condensed_text() -> None:
    stream_add = _kernels("profile_kernels")[0]
    stalls = stream_add.stalls
    assert next(iter(stalls)) == "long_scoreboard" and "selected" not in stalls
    text = stream_add.to_json()["summary"]
    assert text.startswith("stream_add: 73.8 us; memory-bound at 77% of memory peak")
    assert "top stall: long scoreboard" in text and "occupancy" in text


def test_ncu_rule_advice_is_attached_per_kernel() -> None:
    stream_add, fma_loop = _kernels("profile_kernels")
    assert any(a.startswith("SOLBottleneck: Memory is more heavily utilized")
               for a in stream_add.advice)
    assert any(a.startswith("SOLBottleneck: Compute is more heavily utilized")
               for a in fma_loop.advice)
    assert not any("could not be found" in a for a in stream_add.advice + fma_loop.advice)
    assert any("estimated speedup" in a for a in stream_add.advice)


def test_pytorch_kernels_with_templated_names() -> None:
    kernels = _kernels("torch_ops")
    assert [ncu_report.short_name(k.name) for k in kernels] == [
        "softmax_warp_forward", "vectorized_elementwise_kernel", "Kernel2"]
    gemm = kernels[2].to_json()
    assert gemm["bound"] == "compute" and gemm["shared_memory_per_block_bytes"] == 49152


def test_no_kernel_and_non_csv_input_give_no_kernels() -> None:
    assert ncu_report.parse_raw_csv((NCU / "filter_nomatch.log").read_text()) == []
    assert ncu_report.parse_raw_csv((NCU / "profile_kernels.log").read_text()) == []
    assert ncu_report.parse_raw_csv("") == []
