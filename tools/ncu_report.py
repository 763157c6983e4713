"""Nsight Compute output → per-kernel metrics and a condensed text a model can act on.

Parsed from `ncu --import R --csv --page raw --print-units base` (one row per profiled kernel,
stable metric names such as `gpu__time_duration.sum`; the second row holds the units) and the
rule results of `--page details --csv` (the OPT/WRN advice Nsight Compute's own rules give).
Parsing raw metric names rather than section display names keeps this independent of how a
section lays out its tables.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any

# smsp__average_warps_issue_stalled_<reason>_per_issue_active.ratio: cycles per issued inst.
_STALL_PREFIX = "smsp__average_warps_issue_stalled_"
_STALL_SUFFIX = "_per_issue_active.ratio"
BOUND_THRESHOLD_PCT = 60.0  # below this for both compute and memory: latency-bound


def _number(text: str) -> float | None:
    text = text.strip().replace(",", "")
    if not text or text in ("n/a", "N/A"):
        return None
    try:
        return float(text)
    except ValueError:
        return None


@dataclass
class KernelProfile:
    """One profiled kernel launch."""

    id: int
    name: str
    grid: str
    block: str
    metrics: dict[str, float] = field(default_factory=dict)
    advice: list[str] = field(default_factory=list)

    def metric(self, name: str, default: float = 0.0) -> float:
        return self.metrics.get(name, default)

    @property
    def stalls(self) -> dict[str, float]:
        """Warp-stall reasons → cycles per issued instruction ("selected" is issuing, left
        out)."""
        out = {}
        for key, value in self.metrics.items():
            if key.startswith(_STALL_PREFIX) and key.endswith(_STALL_SUFFIX):
                reason = key[len(_STALL_PREFIX):-len(_STALL_SUFFIX)]
                if reason != "selected" and value > 0:
                    out[reason] = value
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    @property
    def roofline(self) -> dict[str, float]:
        """FP32 FLOP/s and DRAM bytes/s achieved, their peaks and the arithmetic intensity."""
        m = self.metric
        smsp_hz = m("smsp__cycles_elapsed.avg.per_second")
        flops = smsp_hz * sum(m(f"smsp__sass_thread_inst_executed_op_{op}_pred_on.sum."
                                f"per_cycle_elapsed") * w
                              for op, w in (("ffma", 2.0), ("fadd", 1.0), ("fmul", 1.0)))
        dram = m("dram__bytes.sum.per_second")
        peak_flops = 2 * m("sm__sass_thread_inst_executed_op_ffma_pred_on.sum.peak_sustained") \
            * m("sm__cycles_elapsed.avg.per_second")
        peak_dram = m("dram__bytes.sum.peak_sustained") * m("dram__cycles_elapsed.avg.per_second")
        out = {"achieved_gflops": flops / 1e9, "dram_gbytes_per_s": dram / 1e9,
               "peak_gflops": peak_flops / 1e9, "peak_dram_gbytes_per_s": peak_dram / 1e9}
        out["arithmetic_intensity"] = flops / dram if dram else 0.0
        out["ridge_intensity"] = peak_flops / peak_dram if peak_dram else 0.0
        return out

    @property
    def bound(self) -> str:
        compute = self.metric("sm__throughput.avg.pct_of_peak_sustained_elapsed")
        memory = self.metric("gpu__compute_memory_throughput.avg.pct_of_peak_sustained_elapsed")
        if max(compute, memory) < BOUND_THRESHOLD_PCT:
            return "latency"
        return "memory" if memory >= compute else "compute"

    def to_json(self) -> dict[str, Any]:
        """KernelProfile JSON (proto field names)."""
        m = self.metric
        shared = m("launch__shared_mem_per_block_static") + \
            m("launch__shared_mem_per_block_dynamic")
        return {
            "id": self.id, "name": self.name, "grid": self.grid, "block": self.block,
            "duration_us": m("gpu__time_duration.sum") / 1e3,
            "sm_throughput_pct": m("sm__throughput.avg.pct_of_peak_sustained_elapsed"),
            "memory_throughput_pct":
                m("gpu__compute_memory_throughput.avg.pct_of_peak_sustained_elapsed"),
            "dram_throughput_pct": m("gpu__dram_throughput.avg.pct_of_peak_sustained_elapsed"),
            "l2_throughput_pct": m("lts__throughput.avg.pct_of_peak_sustained_elapsed"),
            "l1_throughput_pct": m("l1tex__throughput.avg.pct_of_peak_sustained_active"),
            "l2_hit_rate_pct": m("lts__t_sector_hit_rate.pct"),
            "l1_hit_rate_pct": m("l1tex__t_sector_hit_rate.pct"),
            "achieved_occupancy_pct": m("sm__warps_active.avg.pct_of_peak_sustained_active"),
            "theoretical_occupancy_pct": m("sm__maximum_warps_per_active_cycle_pct"),
            "registers_per_thread": int(m("launch__registers_per_thread")),
            "shared_memory_per_block_bytes": int(shared),
            "warp_stalls": self.stalls,
            "bound": self.bound,
            "roofline": self.roofline,
            "advice": self.advice,
            "summary": condensed(self),
        }


def parse_raw_csv(text: str) -> list[KernelProfile]:
    """Kernels from `--page raw --csv`; ncu's own lines (==PROF==, warnings) are skipped."""
    lines = [line for line in text.splitlines() if line.startswith('"')]
    rows = list(csv.reader(io.StringIO("\n".join(lines))))
    if len(rows) < 2 or rows[0][:1] != ["ID"]:
        return []
    header = rows[0]
    kernels = []
    for row in rows[2:]:  # rows[1] holds the units
        cells = dict(zip(header, row))
        kernel = KernelProfile(id=int(_number(cells.get("ID", "0")) or 0),
                               name=cells.get("Kernel Name", ""),
                               grid=cells.get("Grid Size", ""), block=cells.get("Block Size", ""))
        for key, value in cells.items():
            number = _number(value)
            if number is not None and "__" in key:
                kernel.metrics[key] = number
        kernels.append(kernel)
    return kernels


def parse_rules(details_csv: str) -> dict[int, list[str]]:
    """Kernel id → Nsight Compute's OPT/WRN rule messages, with the estimated speedup."""
    lines = [line for line in details_csv.splitlines() if line.startswith('"')]
    advice: dict[int, list[str]] = {}
    for row in csv.DictReader(io.StringIO("\n".join(lines))):
        rule_type = (row.get("Rule Type") or "").strip()
        text = (row.get("Rule Description") or "").strip()
        if rule_type not in ("OPT", "WRN") or not text or "could not be found" in text:
            continue
        speedup = _number(row.get("Estimated Speedup") or "")
        if speedup:
            text += f" (estimated speedup {speedup:.0f}%)"
        advice.setdefault(int(_number(row.get("ID", "0")) or 0), []).append(
            f"{row.get('Rule Name', '')}: {text}")
    return advice


def parse(raw_csv: str, details_csv: str = "") -> list[KernelProfile]:
    kernels = parse_raw_csv(raw_csv)
    rules = parse_rules(details_csv) if details_csv else {}
    for kernel in kernels:
        kernel.advice = rules.get(kernel.id, [])
    return kernels


def short_name(name: str) -> str:
    """`void ns::kern<...>(args)` → `kern`: what a model needs to recognise its kernel."""
    base = name.split("(")[0].strip()
    depth, cut = 0, len(base)
    for i in range(len(base) - 1, -1, -1):  # drop a trailing template argument list
        if base[i] == ">":
            depth += 1
        elif base[i] == "<":
            depth -= 1
            if depth == 0:
                cut = i
                break
    if base.endswith(">"):
        base = base[:cut]
    return base.split()[-1].split("::")[-1] if base else name


def condensed(kernel: KernelProfile) -> str:
    """One line: the bound, how close to peak, occupancy and the top stall."""
    m = kernel.metric
    memory = m("gpu__compute_memory_throughput.avg.pct_of_peak_sustained_elapsed")
    compute = m("sm__throughput.avg.pct_of_peak_sustained_elapsed")
    dram = m("gpu__dram_throughput.avg.pct_of_peak_sustained_elapsed")
    parts = [f"{short_name(kernel.name)}: {m('gpu__time_duration.sum') / 1e3:.1f} us"]
    if kernel.bound == "memory":
        parts.append(f"memory-bound at {memory:.0f}% of memory peak (DRAM {dram:.0f}%), "
                     f"compute {compute:.0f}%")
    elif kernel.bound == "compute":
        parts.append(f"compute-bound at {compute:.0f}% of SM peak, memory {memory:.0f}%")
    else:
        parts.append(f"latency-bound: compute {compute:.0f}% and memory {memory:.0f}% of "
                     "peak (too little parallelism or long dependency chains)")
    parts.append(f"occupancy {m('sm__warps_active.avg.pct_of_peak_sustained_active'):.0f}% "
                 f"achieved of {m('sm__maximum_warps_per_active_cycle_pct'):.0f}% theoretical "
                 f"({int(m('launch__registers_per_thread'))} regs/thread)")
    stalls = kernel.stalls
    if stalls:
        reason, cycles = next(iter(stalls.items()))
        share = 100 * cycles / sum(stalls.values())
        parts.append(f"top stall: {reason.replace('_', ' ')} {share:.0f}% "
                     f"({cycles:.1f} cycles/instruction)")
    roof = kernel.roofline
    if roof["ridge_intensity"] and roof["arithmetic_intensity"]:
        side = "below" if roof["arithmetic_intensity"] < roof["ridge_intensity"] else "above"
        parts.append(f"FP32 intensity {roof['arithmetic_intensity']:.2g} FLOP/byte, {side} the "
                     f"ridge point {roof['ridge_intensity']:.1f}")
    return "; ".join(parts)
