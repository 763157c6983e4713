"""Timing quality of the bench tool: can its numbers rank kernels a few percent apart?

Steps:
  1. The same kernel benchmarked N times in separate bench calls: spread of the medians
     (max/min) and the relative errors the tool reported.
  2. Two kernels whose work differs by 3% (the slower one does 3% more elementwise passes on a
     scratch tensor, so both give the same output), each benchmarked in its own call, T trials:
     how often the faster one has the lower median.
Each call runs the real tool (its own processes, its own clock) on this machine's CPU; a GPU node
runs the same script on the GPU path.

  3. GPU path only: agreement with triton.testing.do_bench on the same kernel (same process
     as this script, L2 flushed by do_bench too): the ratio of the medians.

    python benchmarks/bench_timing_quality.py [--device cpu|cuda] [--calls 10] [--trials 5]
        [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from perfbox import tools  # noqa: E402
from perfbox.tools.types import ToolRequest  # noqa: E402

PASSES = 100

REFERENCE_TEMPLATE = '''
import torch
import torch.nn as nn


class Model(nn.Module):
    def forward(self, x):
        y = x
        for _ in range({passes}):
            y = torch.sin(y)
        return y


SHAPE = {shape}


def get_inputs():
    return [torch.randn(*SHAPE)]


def get_init_inputs():
    return []
'''

SUBMISSION = '''
import torch
import torch.nn as nn


class ModelNew(nn.Module):
    def forward(self, x):
        y = x
        for _ in range({passes}):
            y = torch.sin(y)
        scratch = x
        for _ in range({extra}):
            scratch = torch.sin(scratch)  # extra work that does not change the output
        return y
'''


# GPU: 64 MiB per tensor, so each sin pass is DRAM-bound (~45 us on an H100) and a call is
# GPU-bound rather than bound by Python's kernel launches (which would time the CPU)
SHAPES = {"cpu": (64, 256), "cuda": (4096, 4096)}


def bench_once(workdir: Path, passes: int, extra: int, budget_s: float, device: str) -> dict:
    (workdir / "reference.py").write_text(REFERENCE_TEMPLATE.format(passes=PASSES,
                                                                    shape=SHAPES[device]))
    (workdir / "new.py").write_text(SUBMISSION.format(passes=passes, extra=extra))
    out = tools.run(ToolRequest("bench", "kernelbench", ["new.py", "reference.py"], workdir,
                                {"time_budget_s": budget_s, "device": device}))
    if out.status.name != "OK":
        raise RuntimeError(out.summary)
    return out.report


def do_bench_agreement(workdir: Path, medians_us: list[float]) -> dict:
    """triton.testing.do_bench on the same submission in this process: its median against
    the median of our medians."""
    import statistics

    import torch
    import triton.testing

    sys.path.insert(0, str(workdir))
    namespace: dict = {}
    exec((workdir / "new.py").read_text(), namespace)
    model = namespace["ModelNew"]().cuda()
    x = torch.randn(*SHAPES["cuda"], device="cuda")
    with torch.no_grad():
        ms = triton.testing.do_bench(lambda: model(x), warmup=100, rep=1000,
                                     return_mode="median")
    ours = statistics.median(medians_us) / 1e3
    print(f"do_bench median {ms * 1e3:.1f} us vs bench {ours * 1e3:.1f} us: ratio "
          f"{ours / ms:.4f}")
    return {"do_bench_median_ms": ms, "bench_median_ms": ours, "ratio": ours / ms}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--budget-s", type=float, default=3.0)
    parser.add_argument("--out", help="default: benchmarks/results/timing_quality[_gpu].json")
    args = parser.parse_args()
    args.out = args.out or str(REPO / "benchmarks" / "results" / (
        "timing_quality.json" if args.device == "cpu" else "timing_quality_gpu.json"))
    os.environ.setdefault("TRITON_CACHE_DIR", tempfile.mkdtemp())
    workdir = Path(tempfile.mkdtemp(prefix="timing-quality-"))

    # Step 1: the same kernel, separate calls
    same = [bench_once(workdir, PASSES, 0, args.budget_s, args.device) for _ in range(args.calls)]
    medians = [r["submission"]["median_us"] for r in same]
    rel_errors = [r["submission"]["rel_error"] for r in same]
    speedups = [r["speedup"] for r in same]
    spread = max(medians) / min(medians)
    speedup_spread = max(speedups) / min(speedups)
    print(f"same kernel x{args.calls}: medians {min(medians):.1f}-{max(medians):.1f} us, "
          f"spread {spread:.3f}; speedups {min(speedups):.3f}-{max(speedups):.3f}, spread "
          f"{speedup_spread:.3f}; rel. errors {min(rel_errors):.4f}-{max(rel_errors):.4f}")

    # Step 2: 3% apart, ranked
    extra = round(PASSES * 0.03)
    trials = []
    for _ in range(args.trials):
        fast_report = bench_once(workdir, PASSES, 0, args.budget_s, args.device)
        slow_report = bench_once(workdir, PASSES, extra, args.budget_s, args.device)
        fast, slow = (r["submission"]["median_us"] for r in (fast_report, slow_report))
        fast_x, slow_x = fast_report["speedup"], slow_report["speedup"]
        trials.append({"fast_us": fast, "slow_us": slow, "correct": fast < slow,
                       "measured_gap": slow / fast - 1, "fast_speedup": fast_x,
                       "slow_speedup": slow_x, "correct_by_speedup": fast_x > slow_x})
        print(f"  3% pair: fast {fast:.1f} us, slow {slow:.1f} us -> "
              f"{'ranked correctly' if fast < slow else 'RANKED WRONG'}; by speedup against "
              f"the interleaved reference {fast_x:.3f} vs {slow_x:.3f} -> "
              f"{'correct' if fast_x > slow_x else 'WRONG'}")
    agreement = do_bench_agreement(workdir, medians) if args.device == "cuda" else None
    correct = sum(t["correct"] for t in trials)
    correct_x = sum(t["correct_by_speedup"] for t in trials)
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": " ".join(["python", "benchmarks/bench_timing_quality.py", *sys.argv[1:]]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "host": platform.node(), "device": same[0]["device"]},
        "same_kernel": {"calls": args.calls, "medians_us": medians, "spread": spread,
                        "speedups": speedups, "speedup_spread": speedup_spread,
                        "rel_errors": rel_errors},
        "pair_3_percent": {"trials": trials, "ranked_correctly": correct,
                           "ranked_correctly_by_speedup": correct_x, "of": args.trials},
        "do_bench_agreement": agreement,
        "gpu": same[0].get("gpu"),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"3% pair ranked correctly in {correct}/{args.trials} trials by median, "
          f"{correct_x}/{args.trials} by speedup; written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
