"""Timing quality of the bench tool: does it rank kernels 3% apart, and call equal ones equal?

Steps (each a real bench call: the tool's processes, its clock, the confined submission):
  1. Conditions: commit, package versions, CPU count, load before; with --hog, a background
     process spins (unpinned, like another tenant) for the whole run.
  2. Spread: the same kernel against the same reference in N separate bench calls: the spread
     of the submission's medians and of the speedups.
  3. Ranking: a kernel doing 3% more work (103 passes instead of 100, same output) benchmarked
     against the 100-pass reference, T trials: ranked correctly when the speedup is below 1;
     how often the 95% interval excludes 1 (a difference the tool calls significant).
  4. Equality: an identical pair, T trials: how often the interval contains 1.
  5. GPU path only: agreement with triton.testing.do_bench on the same kernel.

    python benchmarks/bench_timing_quality.py [--hog] [--device cpu|cuda] [--calls 10]
        [--trials 10] [--budget-s 5] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import run_conditions  # noqa: E402

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


def conditions() -> dict:
    """Commit, versions, machine and load (benchmarks/run_conditions.py)."""
    return run_conditions.conditions(("perfbox", "torch"))

def bench_once(workdir: Path, extra: int, budget_s: float, device: str) -> dict:
    (workdir / "reference.py").write_text(REFERENCE_TEMPLATE.format(passes=PASSES,
                                                                    shape=SHAPES[device]))
    (workdir / "new.py").write_text(SUBMISSION.format(passes=PASSES, extra=extra))
    out = tools.run(ToolRequest("bench", "kernelbench", ["new.py", "reference.py"], workdir,
                                {"time_budget_s": budget_s, "device": device}))
    if out.status.name != "OK":
        raise RuntimeError(out.summary)
    return out.report


def summary_of(report: dict) -> dict:
    return {"speedup": report["speedup"], "ci": [report.get("speedup_ci_low", 0.0),
                                                 report.get("speedup_ci_high", 0.0)],
            "median_us": report["submission"]["median_us"],
            "reference_median_us": report["reference"]["median_us"],
            "rounds": report.get("num_rounds", 0),
            "flags": report.get("measurement_flags", []),
            "contention": report.get("host", {}).get("contention")}


def do_bench_agreement(workdir: Path, medians_us: list[float]) -> dict:
    """triton.testing.do_bench on the same submission in this process: its median against
    the median of our medians."""
    import torch
    import triton.testing

    namespace: dict = {}
    exec((workdir / "new.py").read_text(), namespace)
    model = namespace["ModelNew"]().cuda()
    x = torch.randn(*SHAPES["cuda"], device="cuda")
    with torch.no_grad():
        ms = triton.testing.do_bench(lambda: model(x), warmup=100, rep=1000,
                                     return_mode="median")
    ours = statistics.median(medians_us) / 1e3
    return {"do_bench_median_ms": ms, "bench_median_ms": ours, "ratio": ours / ms}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--budget-s", type=float, default=5.0)
    parser.add_argument("--hog", action="store_true",
                        help="a background process spins on one core for the whole run")
    parser.add_argument("--out", help="default: benchmarks/results/timing_quality[_hog|_gpu]"
                        ".json")
    args = parser.parse_args()
    suffix = "_gpu" if args.device == "cuda" else ("_hog" if args.hog else "")
    args.out = args.out or str(REPO / "benchmarks" / "results" / f"timing_quality{suffix}.json")
    os.environ.setdefault("TRITON_CACHE_DIR", tempfile.mkdtemp())
    workdir = Path(tempfile.mkdtemp(prefix="timing-quality-"))
    # Step 1: conditions, and the hog
    before = conditions()
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if args.hog else None
    started = time.monotonic()
    try:
        # Step 2: spread of one kernel over separate calls
        same = [summary_of(bench_once(workdir, 0, args.budget_s, args.device))
                for _ in range(args.calls)]
        medians = [s["median_us"] for s in same]
        speedups = [s["speedup"] for s in same]
        print(f"same kernel x{args.calls}: medians {min(medians):.1f}-{max(medians):.1f} us "
              f"(spread {max(medians) / min(medians):.3f}), speedups {min(speedups):.3f}-"
              f"{max(speedups):.3f}", flush=True)
        # Steps 3 and 4: the 3% pair and the identical pair, alternating trial by trial
        extra = round(PASSES * 0.03)
        slower, equal = [], []
        for trial in range(args.trials):
            slower.append(summary_of(bench_once(workdir, extra, args.budget_s, args.device)))
            equal.append(summary_of(bench_once(workdir, 0, args.budget_s, args.device)))
            s, e = slower[-1], equal[-1]
            print(f"  trial {trial + 1}: 3% slower -> {s['speedup']:.3f} [{s['ci'][0]:.3f}, "
                  f"{s['ci'][1]:.3f}]; identical -> {e['speedup']:.3f} [{e['ci'][0]:.3f}, "
                  f"{e['ci'][1]:.3f}]", flush=True)
        agreement = do_bench_agreement(workdir, medians) if args.device == "cuda" else None
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    ranked = sum(s["speedup"] < 1 for s in slower)
    significant = sum(s["ci"][1] < 1 for s in slower)
    equal_within = sum(e["ci"][0] <= 1 <= e["ci"][1] for e in equal)
    result = {
        "command": " ".join(["python", "benchmarks/bench_timing_quality.py", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "conditions": {**before, "load_avg_after": list(os.getloadavg()),
                       "hog": args.hog, "device": args.device,
                       "elapsed_s": round(time.monotonic() - started, 1)},
        "spread": {"calls": same, "median_spread": max(medians) / min(medians),
                   "median_cv": statistics.pstdev(medians) / statistics.fmean(medians),
                   "speedup_spread": max(speedups) / min(speedups)},
        "pair_3_percent": {"trials": slower, "ranked_correctly": ranked,
                           "interval_excludes_1": significant, "of": args.trials},
        "identical_pair": {"trials": equal, "interval_contains_1": equal_within,
                           "of": args.trials},
        "do_bench_agreement": agreement,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"3% slower ranked correctly in {ranked}/{args.trials} ({significant} significant); "
          f"identical pair within its interval in {equal_within}/{args.trials}; "
          f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
