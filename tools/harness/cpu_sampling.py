"""Timing on the CPU: the tool's clock, fresh inputs per call, the timed outputs verified.

One timed call of one side, step by step:
1. The side is frozen (every process it has, SIGSTOP). The tool draws a fresh input set (torch
   seeded from the OS's CSPRNG) and writes it into the side's shared region.
2. The clock starts; the side is thawed and told `go:1`; it runs the call on that input set,
   writes the addresses of its outputs into the region's header and answers; the side is
   frozen again (all its threads confirmed stopped); the clock stops. Work done after
   answering, before the freeze, is inside the clock; nothing the side runs can run outside it.
3. Whether this call is verified is drawn *now*, after it ran; a verified submission call's
   outputs are read from its memory (/proc/PID/mem, frozen) and compared with the reference's
   outputs on the tool's own copy of the input; its inputs must be unchanged and its outputs
   must not be the input buffer. One mismatch is WRONG_ANSWER for the whole bench.
One call per window, because a side that could see several input sets at once could batch
them (read the next inputs through its argument's storage and compute them all in one go):
the submission sees only the input of the call being timed. The round trip (thaw, answer,
freeze), measured on empty windows of the trusted reference throughout, is subtracted.
Rounds pair one call of each side (order alternating), so load that comes and goes falls on
both; the speedup is the ratio of the two sides' median call times with a bootstrap interval
that resamples whole rounds (`estimates`), and sampling stops once that interval is narrower than the target or the budget is
spent. The CPU time of each side's processes in each window (the kernel's accounting) is
recorded beside the wall time.
"""

from __future__ import annotations

import secrets
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from perfbox.tools.harness import estimates, proctree, slots, wire
from perfbox.tools.harness.problems import Problem
from perfbox.tools.harness.side import Side
from perfbox.tools.types import ToolInputError

VERIFY_ONE_IN = 4  # a timed submission call is verified with this odds (drawn after it ran)
ALWAYS_VERIFY_FIRST = 8  # ... and the first calls always
EMPTY_WINDOW_EVERY = 4  # rounds per period; an empty reference window (the round trip) opens
# the period's first two rounds, so it precedes a submission call as often as a reference call
# (before only submission calls, it cooled the caches of the side that would otherwise have
# followed itself, and an identical kernel measured 3% slower)
MIN_ROUNDS = 30
CALL_TIMEOUT_S = 120.0


RAN_WHILE_FROZEN_S = 50e-6  # CPU time a frozen side may show between two looks (none, really)


class TimedWrong(RuntimeError):
    """A timed call's output was not the reference's."""


class RanWhileFrozen(wire.SideFailed):
    """The submission's processes used CPU while the tool had them stopped."""


@dataclass
class SideSamples:
    """What was measured of one side: one entry per timed call."""

    wall_s: list[float] = field(default_factory=list)  # thaw to freeze, less the round trip
    cpu_s: list[float] = field(default_factory=list)  # its processes' CPU time in the window
    faults: list[int] = field(default_factory=list)  # its processes' page faults in the window


@dataclass
class Sampling:
    """The outcome of a CPU bench's sampling."""

    sides: dict[str, SideSamples]
    speedup: float  # median reference call time / median submission call time
    interval: tuple[float, float]  # ~95% bootstrap interval of the speedup (paired rounds)
    overhead_s: float  # median empty window (thaw, go:0, answer, freeze), subtracted
    overhead_cpu_s: float  # CPU time of an empty window, subtracted from the CPU figures
    verified_outputs: int
    converged: bool
    elapsed_s: float
    output_bytes: int  # bytes of one call's outputs


@dataclass
class Window:
    """One thaw-to-freeze window of one side."""

    wall_s: float
    cpu_s: float
    faults: int  # page faults of the side's processes in the window
    args: list[Any]  # the inputs the tool placed (its own copy)


def _leaves(args: list[Any]) -> tuple[list[Any], str]:
    """The call's arguments as leaves and the JSON of how they nest (torch's pytree)."""
    from torch.utils import _pytree

    leaves, tree = _pytree.tree_flatten(list(args))
    return leaves, _pytree.treespec_dumps(tree)


def _layout(args: list[Any], outputs: list[Any]) -> slots.Layout:
    import torch

    for k, o in enumerate(outputs):
        if not isinstance(o, torch.Tensor):
            raise ToolInputError(f"bench times problems whose outputs are tensors; the "
                                 f"reference's output {k} is a {type(o).__name__} (check "
                                 "compares it)")
    leaves, tree = _leaves(args)
    specs, constants = [], []
    for a in leaves:
        tensor = isinstance(a, torch.Tensor)
        specs.append(slots.spec_of(a) if tensor else None)
        constants.append(None if tensor else a)
    return slots.Layout(tuple(specs), tuple(constants), tree,
                        tuple(slots.spec_of(o) for o in outputs))


class Bench:
    """Both sides with their regions; runs timed windows on the tool's clock."""

    def __init__(self, problem: Problem, sides: dict[str, Side], first_args: list[Any],
                 first_expected: list[Any]) -> None:
        self.problem = problem
        self.sides = sides
        self.layout = _layout(first_args, first_expected)
        # a kernel may return (a view of) its input only where the reference does
        self.may_alias_inputs = problem.reference_aliases_inputs(first_args)
        self.regions: dict[str, slots.Region] = {}
        self.memory_fd: int | None = None  # /proc/PID/mem of the submission's side
        self.frozen_usage: dict[str, proctree.Usage] = {}  # each side's, at its last freeze
        self.tol_for: dict[str, float] = {}
        self.case: dict[str, Any] | None = None  # GPU MODE: the benchmark case being timed

    def map_regions(self) -> None:
        """A region for each side, handed over on its pipe (sides must be thawed)."""
        import os
        from multiprocessing.reduction import send_handle

        for name, side in self.sides.items():
            if name in self.regions:
                self.regions[name].close()
            fd = slots.new_region_fd(self.layout.region_bytes)
            try:
                side.conn.send_bytes(b"slots:" + wire.dumps(self.layout.to_plain()))
                send_handle(side.conn, fd, side.pid)
                reply = side.conn.recv_bytes(1 << 20)
                if reply != b"ok":
                    raise wire.SideFailed(wire.error_text(reply))
                self.regions[name] = slots.Region(fd, self.layout)
            except (EOFError, OSError) as e:
                raise wire.SideFailed("its process exited while mapping its inputs") from e
            finally:
                os.close(fd)

    def output_bytes(self) -> int:
        return sum(s.num_bytes for s in self.layout.outputs)

    def close(self) -> None:
        import os

        if self.memory_fd is not None:
            os.close(self.memory_fd)
            self.memory_fd = None
        for region in self.regions.values():
            region.close()

    def _read_outputs(self) -> list[Any]:
        """The submission's last outputs, read from its memory at the addresses its header
        gives (it is frozen: nothing changes while they are read). An address that cannot be
        read, or a size other than the reference output's, is a wrong output."""
        import os

        import torch

        if self.memory_fd is None:
            self.memory_fd = os.open(f"/proc/{self.sides['submission'].pid}/mem", os.O_RDONLY)
        header = self.regions["submission"].header.tolist()
        outputs = []
        inputs_at = self._input_ranges()
        for k, spec in enumerate(self.layout.outputs):
            address, size = header[k]
            if size != spec.num_bytes:
                raise TimedWrong(f"output {k} of a timed call has {size} bytes where the "
                                 f"reference's has {spec.num_bytes}")
            if size and not self.may_alias_inputs and \
                    any(address < hi and lo < address + size for lo, hi in inputs_at):
                raise TimedWrong(f"output {k} of a timed call is (a view of) the call's input "
                                 "buffer; the reference returns a tensor of its own, so must "
                                 "the kernel (writing into or returning the input skips the "
                                 "output's allocation and writes)")
            data = bytearray()
            try:
                while len(data) < size:
                    chunk = os.pread(self.memory_fd, size - len(data), address + len(data))
                    if not chunk:
                        raise OSError("short read")
                    data += chunk
            except (OSError, OverflowError, ValueError) as e:
                raise TimedWrong(f"output {k} of a timed call is not readable where the "
                                 f"submission's process says it is ({e})") from e
            tensor = torch.frombuffer(data, dtype=getattr(torch, spec.dtype)) if size else \
                torch.empty(0, dtype=getattr(torch, spec.dtype))
            outputs.append(tensor.view(spec.shape))
        return outputs

    def _place_input(self, name: str) -> list[Any]:
        import torch

        region = self.regions[name]
        region.header.zero_()  # a call that writes no address has no output
        torch.manual_seed(secrets.randbits(63))
        args = self.problem.draw_continuing(self.case)
        leaves, tree = _leaves(args)
        if tree != self.layout.tree:
            raise ToolInputError("the problem's inputs changed structure between calls; bench "
                                 "needs the same structure and shapes every call")
        for slot, value, constant in zip(region.leaves, leaves, self.layout.constants):
            if isinstance(slot, torch.Tensor):
                if not isinstance(value, torch.Tensor) or value.shape != slot.shape or \
                        value.dtype != slot.dtype:
                    raise ToolInputError("the problem's inputs changed shape or dtype between "
                                         "calls; bench needs fixed input shapes")
                slot.copy_(value)
            elif value != constant:
                raise ToolInputError("a non-tensor input of the problem changed between calls "
                                     f"({constant!r}, then {value!r}); bench needs them fixed")
        return args

    def window(self, name: str, calls: int) -> Window:
        """One timed window of `calls` (0 or 1) calls; the side starts and ends frozen."""
        side = self.sides[name]
        args = self._place_input(name) if calls else []
        if not calls:
            self.regions[name].header.zero_()
        before = self.still_frozen(name)
        start = time.perf_counter()
        side.thaw()
        try:
            side.conn.send_bytes(b"go:%d" % calls)
            if not side.conn.poll(CALL_TIMEOUT_S):
                raise wire.SideFailed(f"no answer to a timed call within {CALL_TIMEOUT_S:.0f} s")
            reply = side.conn.recv_bytes(1 << 20)
        except (EOFError, OSError) as e:
            raise wire.SideFailed("its process exited during a timed call") from e
        finally:
            side.freeze()
        wall = time.perf_counter() - start
        after = self.frozen_usage[name] = side.usage()
        if reply != b"done":
            raise wire.SideFailed(wire.error_text(reply))
        return Window(wall, after.cpu_s - before.cpu_s, after.faults - before.faults, args)

    def still_frozen(self, name: str) -> proctree.Usage:
        """The side's usage now; for the submission, proof that it did not run since it was
        frozen. SIGSTOP is not a wall: a timer, a message queue or a child's exit signal can
        have the kernel send SIGCONT. The kernel's CPU accounting says whether it ran, and any
        run means other windows were timed with it alive: the whole bench is void."""
        now = self.sides[name].usage()
        last = self.frozen_usage.get(name)
        if name == "submission" and last is not None and \
                now.cpu_s - last.cpu_s > RAN_WHILE_FROZEN_S:
            raise RanWhileFrozen(f"the submission's processes used "
                                 f"{1e6 * (now.cpu_s - last.cpu_s):.0f} us of CPU while frozen "
                                 "(woken by a kernel-sent SIGCONT?); the figures of every "
                                 "window since are void")
        return now

    def _input_ranges(self) -> list[tuple[int, int]]:
        """Where the submission's process maps its input region (every mapping of it)."""
        ranges = []
        try:
            with open(f"/proc/{self.sides['submission'].pid}/maps") as f:
                for line in f:
                    if slots.MEMFD_NAME in line:
                        lo, hi = line.split()[0].split("-")
                        ranges.append((int(lo, 16), int(hi, 16)))
        except OSError:
            pass
        return ranges

    def _check_inputs_intact(self, args: list[Any], index: int) -> None:
        """A kernel leaves its inputs as it found them (the reference does; a caller may
        reuse them): one that writes its result into an input saves the allocation and the
        memory traffic of an output, which is not the problem it was given."""
        import torch

        for k, (slot, value) in enumerate(zip(self.regions["submission"].leaves,
                                              _leaves(args)[0])):
            if isinstance(slot, torch.Tensor) and not torch.equal(slot, value):
                raise TimedWrong(f"timed call {index} modified its input {k} in place; a "
                                 "kernel must leave its inputs as they were")

    def verify(self, name: str, args: list[Any], index: int) -> None:
        """Compares the submission's outputs, read from its memory, with the reference's on
        the tool's copy of the inputs; the side is frozen, so it cannot finish them now. The
        reference's calls are "verified" as often, against the tool's own run: the tool's
        reference run and comparison then disturb the caches before both sides' next calls
        alike."""
        expected = self.problem.expected(args)
        if name == "submission":
            self._check_inputs_intact(args, index)
            got = self._read_outputs()
        else:
            got = [t.clone() if hasattr(t, "clone") else t for t in expected]
        _, wrong = self.problem.judge(args, got, self.tol_for, index, expected)
        if wrong:
            raise TimedWrong(f"timed call {index} returned a wrong output (skipped, cached or "
                             f"unfinished work?): {wrong}")


def run(bench: Bench, options: dict[str, Any]) -> Sampling:
    """Alternates rounds until the speedup's interval is narrower than the target or the
    budget is spent. Both sides start thawed (they map their regions) and end frozen."""
    budget_s = float(options["time_budget_s"])
    target = float(options["target_rel_error"])
    min_rounds = max(MIN_ROUNDS, int(options["min_samples"]))
    started = time.monotonic()
    bench.map_regions()
    for name, side in bench.sides.items():
        side.freeze()
        bench.frozen_usage[name] = side.usage()
    # 1. warm-up: a few calls of each side, untimed
    for name in bench.sides:
        for _ in range(3):
            bench.window(name, 1)
    # 2. paired rounds, order alternating, empty reference windows in between
    samples = {name: SideSamples() for name in bench.sides}
    empty_wall: list[float] = []
    empty_cpu: list[float] = []
    raw: dict[str, list[float]] = {name: [] for name in bench.sides}
    verified = 0
    converged = False
    for round_no in range(10_000_000):
        if round_no % EMPTY_WINDOW_EVERY in (0, 1):
            empty = bench.window("reference", 0)
            empty_wall.append(empty.wall_s)
            empty_cpu.append(empty.cpu_s)
        order = ["submission", "reference"] if round_no % 2 == 0 else ["reference",
                                                                       "submission"]
        for name in order:
            window = bench.window(name, 1)
            raw[name].append(window.wall_s)
            samples[name].cpu_s.append(window.cpu_s)
            samples[name].faults.append(window.faults)
            if round_no < ALWAYS_VERIFY_FIRST or secrets.randbelow(VERIFY_ONE_IN) == 0:
                bench.verify(name, window.args, round_no)
                verified += name == "submission"
        rounds = round_no + 1
        if rounds >= min_rounds and rounds % max(10, rounds // 10) == 0:
            speedup, (lo, hi) = estimates.speedup_interval(raw, statistics.median(empty_wall))
            if (hi - lo) / 2 <= target * speedup:
                converged = True
                break
            if time.monotonic() - started > budget_s:
                break
    bench.still_frozen("submission")  # the last reference windows too
    overhead = statistics.median(empty_wall)
    overhead_cpu = statistics.median(empty_cpu)
    speedup, interval = estimates.speedup_interval(raw, overhead)
    for name in bench.sides:
        samples[name].wall_s = [max(w - overhead, 1e-9) for w in raw[name]]
        samples[name].cpu_s = [max(c - overhead_cpu, 0.0) for c in samples[name].cpu_s]
    return Sampling(samples, speedup, interval, overhead, overhead_cpu, verified,
                    converged, time.monotonic() - started, bench.output_bytes())
