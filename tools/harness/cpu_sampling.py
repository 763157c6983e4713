"""Timing on the CPU: the tool's clock, fresh inputs per call, the timed outputs verified.

A sample of one side, step by step:
1. The side is frozen (every process it has, SIGSTOP). The tool draws N fresh input sets
   (a secret seed per sample) and writes them into the side's shared region.
2. The clock starts; the side is thawed and told `go:N`; it runs calls 0..N-1, each reading
   its own input set and copying its outputs into its own output set, and answers; the side is
   frozen again (all its threads confirmed stopped); the clock stops. Work the side does after
   answering, before it is frozen, is inside the clock; nothing it runs can run outside it.
3. Submission only: the tool picks calls at random *now* and compares their outputs in the
   region with the reference's outputs on the tool's own copy of their inputs. One mismatch is
   WRONG_ANSWER for the whole bench: skipping calls, memoising, or computing only some outputs
   is caught with a probability that grows with every sample.
Rounds pair one sample of each side (order alternating), so load that comes and goes falls on
both; the speedup is the median of the per-round ratios with a distribution-free confidence
interval, and sampling stops once that interval is narrower than the target or the budget is
spent. CPU time is read from the kernel's accounting for both sides.
"""

from __future__ import annotations

import math
import secrets
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from perfbox.tools.harness import slots, wire
from perfbox.tools.harness.problems import Problem
from perfbox.tools.harness.side import Side

SAMPLE_TARGET_S = 0.01  # a sample lasts about this long (the freeze/thaw round trip ~0.1 ms)
MAX_CALLS_PER_SAMPLE = 10_000
VERIFY_PER_SAMPLE = 2  # outputs of each submission sample checked, chosen after it ran
CALIBRATION_ROUNDS = 10
SIZING_ROUNDS = 3


class TimedWrong(RuntimeError):
    """A timed call's output was not the reference's."""


@dataclass
class SideSamples:
    """What was measured of one side."""

    per_call_s: list[float] = field(default_factory=list)  # one entry per sample
    calls_per_sample: int = 1
    calls_timed: int = 0
    cpu_s: float = 0.0  # CPU time of the side's processes over its timed samples
    wall_s: float = 0.0  # sum of its timed windows, less the round-trip overhead


@dataclass
class Sampling:
    """The outcome of a CPU bench's sampling."""

    sides: dict[str, SideSamples]
    ratios: list[float]  # per round: reference per-call time / submission per-call time
    overhead_s: float  # empty round trip (thaw, go:0, answer, freeze), subtracted per sample
    verified_outputs: int
    converged: bool
    elapsed_s: float
    output_bytes: int  # bytes of one call's outputs


def _layout(problem: Problem, args: list[Any], outputs: list[Any], num_calls: int
            ) -> slots.Layout:
    import torch

    specs, constants = [], []
    for a in args:
        tensor = isinstance(a, torch.Tensor)
        specs.append(slots.spec_of(a) if tensor else None)
        constants.append(None if tensor else a)
    return slots.Layout(tuple(specs), tuple(constants),
                        tuple(slots.spec_of(o) for o in outputs), num_calls)


class Bench:
    """Both sides with their regions; runs samples on the tool's clock."""

    def __init__(self, problem: Problem, sides: dict[str, Side], first_args: list[Any],
                 first_expected: list[Any]) -> None:
        self.problem = problem
        self.sides = sides
        self.first_args = first_args
        self.expected_count = len(first_expected)
        self.probe_layout = _layout(problem, first_args, first_expected, 1)
        self.regions: dict[str, slots.Region] = {}
        self.tol_for: dict[str, float] = {}
        self.case: dict[str, Any] | None = None  # GPU MODE: the benchmark case being timed

    # -- regions ----------------------------------------------------------------------------
    def map_regions(self, num_calls: int) -> None:
        """A region of num_calls call sets for each side (sides must be thawed: they answer)."""
        from multiprocessing.reduction import send_handle

        layout = slots.Layout(self.probe_layout.inputs, self.probe_layout.constants,
                              self.probe_layout.outputs, num_calls)
        for name, side in self.sides.items():
            if name in self.regions:
                self.regions[name].close()
            fd = slots.new_region_fd(layout.region_bytes)
            try:
                side.conn.send_bytes(b"slots:" + wire.dumps(layout.to_plain()))
                send_handle(side.conn, fd, side.pid)
                reply = side.conn.recv_bytes(1 << 20)
                if reply != b"ok":
                    raise wire.SideFailed(_said(reply))
                self.regions[name] = slots.Region(fd, layout)
            except (EOFError, OSError) as e:
                raise wire.SideFailed("its process exited while mapping its inputs") from e
            finally:
                import os

                os.close(fd)

    def map_regions_frozen(self, num_calls: int) -> None:
        """map_regions for frozen sides: each is thawed only to map its region."""
        for side in self.sides.values():
            side.thaw()
        try:
            self.map_regions(num_calls)
        finally:
            for side in self.sides.values():
                side.freeze()

    def output_bytes(self) -> int:
        return sum(s.num_bytes for s in self.probe_layout.outputs)

    def max_calls(self) -> int:
        return max(1, min(MAX_CALLS_PER_SAMPLE,
                          slots.MAX_REGION_BYTES // max(1, self.probe_layout.call_bytes)))

    # -- one sample ---------------------------------------------------------------------------
    def _place_inputs(self, name: str, num_calls: int) -> list[list[Any]]:
        import torch

        region = self.regions[name]
        torch.manual_seed(secrets.randbits(63))
        drawn = []
        for i in range(num_calls):
            args = self.problem.draw_continuing(self.case)
            for slot, value in zip(region.inputs[i], args):
                if isinstance(slot, torch.Tensor):
                    slot.copy_(value)
            drawn.append(args)
        return drawn

    def sample(self, name: str, num_calls: int, timeout_s: float) -> tuple[float, list[list[Any]]]:
        """(seconds from thaw to confirmed freeze, the inputs placed); the side starts and ends
        frozen."""
        side = self.sides[name]
        drawn = self._place_inputs(name, num_calls)
        start = time.perf_counter()
        side.thaw()
        try:
            side.conn.send_bytes(b"go:%d" % num_calls)
            if not side.conn.poll(timeout_s):
                raise wire.SideFailed(f"no answer to a sample within {timeout_s:.0f} s")
            reply = side.conn.recv_bytes(1 << 20)
        except (EOFError, OSError) as e:
            raise wire.SideFailed("its process exited during a timed sample") from e
        finally:
            side.freeze()
        elapsed = time.perf_counter() - start
        if reply != b"done":
            raise wire.SideFailed(_said(reply))
        return elapsed, drawn

    def verify(self, drawn: list[list[Any]], count: int) -> int:
        """Compares `count` outputs chosen now, at random, with the reference's; raises
        TimedWrong on the first mismatch. The side is frozen: it cannot finish them now."""
        region = self.regions["submission"]
        chosen = sorted({secrets.randbelow(len(drawn)) for _ in range(count)})
        for i in chosen:
            got = [t.clone() for t in region.outputs[i]]
            _, wrong = self.problem.judge(drawn[i], got, self.tol_for, i)
            if wrong:
                raise TimedWrong(f"a timed call returned a wrong output (call {i} of its "
                                 f"sample; skipped, cached or unfinished work?): {wrong}")
        return len(chosen)


def _said(reply: bytes) -> str:
    if reply.startswith(wire.ERROR_PREFIX):
        text = reply[len(wire.ERROR_PREFIX):].decode(errors="replace").strip()
        return (text.splitlines() or ["(no message)"])[-1]
    return "answered something other than the protocol's reply"


def median_ci(values: list[float], z: float = 1.96) -> tuple[float, float]:
    """Distribution-free ~95% confidence interval of the median (order statistics)."""
    ordered = sorted(values)
    n = len(ordered)
    if n < 3:
        return ordered[0], ordered[-1]
    half = z * math.sqrt(n) / 2
    lo = max(0, math.floor(n / 2 - half) - 1)
    hi = min(n - 1, math.ceil(n / 2 + half))
    return ordered[lo], ordered[hi]


def run(bench: Bench, options: dict[str, Any]) -> Sampling:
    """Calibrates, sizes the samples, then alternates rounds until the speedup's interval is
    narrower than the target or the budget is spent. Both sides start thawed, end frozen."""
    budget_s = float(options["time_budget_s"])
    target = float(options["target_rel_error"])
    min_samples = int(options["min_samples"])
    started = time.monotonic()
    for side in bench.sides.values():
        side.freeze()
    # 1. a region big enough for one call, the empty round trip (the trusted reference's),
    # and the calls per sample of each side
    bench.map_regions_frozen(1)
    overhead_s = min(bench.sample("reference", 0, 60.0)[0] for _ in range(CALIBRATION_ROUNDS))
    calls: dict[str, int] = {}
    for name in bench.sides:
        one = min(bench.sample(name, 1, 600.0)[0] for _ in range(SIZING_ROUNDS))
        per_call = max(one - overhead_s, 1e-7)
        calls[name] = max(1, min(bench.max_calls(), round(SAMPLE_TARGET_S / per_call)))
    bench.map_regions_frozen(max(calls.values()))
    # 2. paired rounds, order alternating; every submission sample verified
    samples = {name: SideSamples(calls_per_sample=calls[name]) for name in bench.sides}
    cpu_before = {name: side.cpu_seconds() for name, side in bench.sides.items()}
    ratios: list[float] = []
    verified = 0
    converged = False
    for round_no in range(1_000_000):
        order = ["submission", "reference"]
        if round_no % 2:
            order.reverse()
        per_call: dict[str, float] = {}
        for name in order:
            timeout = max(60.0, 100 * SAMPLE_TARGET_S)
            elapsed, drawn = bench.sample(name, calls[name], timeout)
            side_samples = samples[name]
            net = max(elapsed - overhead_s, 0.0)
            per_call[name] = max(net / calls[name], 1e-12)
            side_samples.per_call_s.append(per_call[name])
            side_samples.calls_timed += calls[name]
            side_samples.wall_s += net
            if name == "submission":
                verified += bench.verify(drawn, min(VERIFY_PER_SAMPLE, calls[name]))
        ratios.append(per_call["reference"] / per_call["submission"])
        elapsed = time.monotonic() - started
        if len(ratios) >= min_samples:
            lo, hi = median_ci(ratios)
            mid = statistics.median(ratios)
            if (hi - lo) / 2 <= target * mid:
                converged = True
                break
            if elapsed > budget_s:
                break
    for name, side in bench.sides.items():
        samples[name].cpu_s = side.cpu_seconds() - cpu_before[name]
    return Sampling(samples, ratios, overhead_s, verified, converged,
                    time.monotonic() - started, bench.output_bytes())
