"""The program that profile and sanitize run under Nsight Compute or compute-sanitizer for a
KernelBench submission: build ModelNew from the reference's init inputs, run forward on the
reference's inputs `--warmup` times, then `--calls` more times, bracketed by
cudaProfilerStart/Stop when `--profiler-range` is given (ncu then skips the warm-up launches).

    python -m perfbox.tools.kernel_runner WORKDIR SUBMISSION REFERENCE [--warmup N] [--calls N]
        [--profiler-range]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("submission")
    parser.add_argument("reference")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--calls", type=int, default=1)
    parser.add_argument("--profiler-range", action="store_true")
    args = parser.parse_args(argv)

    import torch

    from perfbox.tools.harness.side import load_module as _load_module

    sys.path.insert(0, str(args.workdir))
    ref = _load_module(args.workdir / args.reference, "perfbox_reference")
    sub = _load_module(args.workdir / args.submission, "submission")
    torch.manual_seed(0)
    model = sub.ModelNew(*ref.get_init_inputs()).cuda()
    inputs = [x.cuda() if isinstance(x, torch.Tensor) else x for x in ref.get_inputs()]
    with torch.no_grad():
        for _ in range(args.warmup):
            model(*inputs)
        torch.cuda.synchronize()
        if args.profiler_range:
            torch.cuda.profiler.start()
        for _ in range(args.calls):
            model(*inputs)
        torch.cuda.synchronize()
        if args.profiler_range:
            torch.cuda.profiler.stop()
    print(f"kernel_runner: {args.warmup} warm-up and {args.calls} measured calls done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
