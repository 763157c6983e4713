"""A discrete-event simulator of one node's rollout (and of many nodes), for predicting runs
that were not measured: other KV pressures, more trajectories, more nodes.

It runs the rollout worker's own KV policy (perfbox.inference.residency: one budget in tokens,
prefix-cache entries evicted least recently used first, waiters evicted by expected return,
recompute preemption of the latest admitted) on a virtual clock, with the engine replaced by a
step-cost model. Assumptions (stated with every result):
- An engine step costs `step_overhead_s + decode_s_per_seq * decoding sequences +
  prefill_s_per_token * prefill tokens`, fitted by least squares to the forward passes of
  calibration runs (not the runs it is compared with); prefill goes in chunks of
  `prefill_chunk` tokens within `max_batch_tokens` a step, after the decode tokens.
- The KV budget is `kv_pressure` x the trajectories' final contexts (the benchmark's
  definition), at least one context and a little.
- Each node runs one engine and its own tool service with `tool_workers` concurrent jobs;
  trajectories are spread evenly over nodes and never move; the cluster finishes when its
  slowest node does.
- `resubmit` keeps each ended request's KV as a prefix-cache entry and pays
  `request_overhead_s` per re-submission; `resident` keeps a waiter's KV until the policy
  takes it; `resident+speculate` is resident plus, with probability alpha, the call launched at
  the *start* of its turn by a draft model (its wait shrinks to max(0, T - G)); a miss costs
  one wasted tool job. alpha is that draft's hit rate. Without a draft hit, the call is
  launched early: `early_launch_tokens` decode steps before its turn ends (its JSON closes
  before the end tag), measured on the workload's turns through the parser.
- Tool times are drawn from measured per-call times where given, else lognormal with the
  measured mean; turn lengths from the workload's turn lengths in the engine's tokens (one
  fixed length would put every sequence in lockstep, which no real workload does).
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import asdict, dataclass, field
from typing import Any

from perfbox.inference.residency import Residency, ToolTimes

MODES = ("resubmit", "resident", "resident+speculate")
TOOL = "tool"  # one tool kind: its expected time is the EWMA of every call
CLIENT_SIDE_TOOL_WORKERS = 1 << 10  # no queueing beyond what measured tool times hold


@dataclass
class NodeModel:
    step_overhead_s: float  # per forward pass
    decode_s_per_seq: float  # per sequence in a decode step
    prefill_s_per_token: float  # per prefilled token
    kv_pressure: float = 1.0  # KV budget / the trajectories' final contexts
    tool_workers: int = 2  # concurrent tool jobs per node
    request_overhead_s: float = 0.0  # resubmit: per re-submission
    pin_s: float = 1.0  # resident: keep a waiter expected back within this
    prefill_chunk: int = 256  # tokens of one sequence's prefill per step
    max_batch_tokens: int = 512  # tokens of one step in all
    admit_headroom_tokens: int = 32  # as RolloutConfig


@dataclass
class WorkloadModel:
    turns: int  # tool calls per trajectory
    tokens_per_turn: int
    prompt_tokens: int
    response_tokens: int  # tool output tokens per call
    tool_s_mean: float
    tool_s_sigma: float = 0.5  # lognormal shape
    final_tokens: int = 60  # the answer after the last call
    alpha: float = 0.0  # resident+speculate: chance a draft launches the call at turn start
    tool_s_samples: tuple[float, ...] = ()  # measured per-call times: drawn from when given
    turn_tokens_samples: tuple[int, ...] = ()  # the workload's turn lengths: drawn per turn
    # resident+speculate: decode steps between a call's arguments closing and its end tag
    # (early launch: the tool starts that much sooner)
    early_launch_tokens: int = 0


@dataclass
class _Traj:
    name: str
    turn_tokens: list[int]  # every turn's length, the answer last (drawn up front)
    context: int  # tokens that belong in KV
    turn: int = 0
    computed: int = 0  # tokens in its KV
    ever: int = 0  # most tokens it ever had in KV (re-prefill accounting)
    decode_left: int = 0
    slot: int | None = None
    waiting_until: float | None = None  # its tool returns at
    turn_started: float = 0.0
    admitted: int = 0
    done_at: float | None = None
    uncharged: int = 0  # resident: tool output not yet charged to the budget
    early_until: float | None = None  # speculate: its early-launched tool returns at


def _turn_tokens(rng: random.Random, w: WorkloadModel) -> int:
    return rng.choice(w.turn_tokens_samples) if w.turn_tokens_samples else w.tokens_per_turn


def _tool_time(rng: random.Random, w: WorkloadModel) -> float:
    if w.tool_s_samples:
        return rng.choice(w.tool_s_samples)
    sigma = w.tool_s_sigma
    mu = math.log(max(w.tool_s_mean, 1e-6)) - sigma * sigma / 2
    return rng.lognormvariate(mu, sigma)


@dataclass
class _Node:
    """One simulated engine and tool service."""

    node: NodeModel
    work: WorkloadModel
    mode: str
    rng: random.Random
    trajs: list[_Traj]
    now: float = 0.0
    idle: float = 0.0
    generated: int = 0
    prefilled: int = 0
    reprefilled: int = 0
    preemptions: int = 0
    admissions: int = 0
    res: Residency = field(init=False)
    tool_free_at: list[float] = field(init=False)

    def __post_init__(self) -> None:
        finals = [t.context + sum(t.turn_tokens) + self.work.turns * self.work.response_tokens
                  for t in self.trajs]
        budget = max(round(self.node.kv_pressure * sum(finals)),
                     max(finals) + self.node.admit_headroom_tokens + 32)
        self.res = Residency(len(self.trajs), ToolTimes(), budget, lambda: self.now,
                             self.node.pin_s)
        self.tool_free_at = [0.0] * self.node.tool_workers

    def run_tool(self, at: float, seconds: float) -> float:
        start = max(at, heapq.heappop(self.tool_free_at))
        heapq.heappush(self.tool_free_at, start + seconds)
        return start + seconds

    def by_name(self, name: str) -> _Traj:
        return self.trajs[int(name)]

    # -- KV ----------------------------------------------------------------------------------

    def evicted(self, owners: list[str]) -> None:
        for owner in owners:
            victim = self.by_name(owner)
            victim.slot, victim.computed = None, 0

    def admit(self) -> None:
        for t in self.trajs:
            if t.done_at is not None or t.slot is not None or t.waiting_until is not None:
                continue
            grant = self.res.acquire(t.name, t.context, self.node.admit_headroom_tokens)
            if grant is None:
                return  # FIFO
            self.evicted(grant.evicted_owners)
            t.slot, t.computed = grant.stream, min(len(grant.reuse), t.context)
            self.admissions += 1
            t.admitted = self.admissions
            t.uncharged = 0

    def preempt(self, t: _Traj) -> None:
        assert t.slot is not None
        self.res.release(t.slot)
        t.slot, t.computed = None, 0
        self.preemptions += 1

    # -- one step ----------------------------------------------------------------------------

    def step(self) -> bool:
        """One forward pass; False when nothing could run (every live sequence waits)."""
        live = [t for t in self.trajs if t.slot is not None and t.waiting_until is None
                and t.done_at is None]
        decoding: list[_Traj] = []
        for t in live:
            if t.computed < t.context or t.slot is None or t.decode_left == 0:
                continue
            while not self._grow(t, 1, force=True):
                others = [o for o in live if o.slot is not None and o is not t
                          and o not in decoding]
                victim = max(others, key=lambda o: o.admitted) if others else t
                self.preempt(victim)
                if victim is t:
                    break
            if t.slot is not None:
                decoding.append(t)
        for t in live:
            if t.slot is not None and t.uncharged:
                if self._grow(t, t.uncharged, force=False):
                    t.uncharged = 0
        prefilling = [t for t in live if t.slot is not None and t.computed < t.context
                      and not t.uncharged]
        if not decoding and not prefilling and not any(
                t.waiting_until is not None for t in self.trajs):
            stalled = [t for t in live if t.slot is not None and t.uncharged]
            if stalled:
                first = min(stalled, key=lambda t: t.admitted)
                if self._grow(first, first.uncharged, force=True):
                    first.uncharged = 0
                else:
                    self.preempt(max(stalled, key=lambda t: t.admitted))
                return True
        if not decoding and not prefilling:
            return False
        room = self.node.max_batch_tokens - len(decoding)
        chunks = []
        for t in prefilling:
            take = min(self.node.prefill_chunk, room, t.context - t.computed)
            if take <= 0:
                break
            chunks.append((t, take))
            room -= take
        tokens = sum(take for _, take in chunks)
        self.now += self.node.step_overhead_s + self.node.decode_s_per_seq * len(decoding) \
            + self.node.prefill_s_per_token * tokens
        self.prefilled += tokens
        for t, take in chunks:
            self.reprefilled += max(0, min(t.computed + take, t.ever) - t.computed)
            t.computed += take
            t.ever = max(t.ever, t.computed)
            if t.computed == t.context and t.decode_left == 0:
                self._begin_turn(t)
        for t in decoding:
            self._decoded(t)
        return True

    def _grow(self, t: _Traj, tokens: int, force: bool) -> bool:
        assert t.slot is not None
        got = self.res.grow(t.slot, tokens, force)
        if got is None:
            return False
        self.evicted(got[0])
        return True

    def _begin_turn(self, t: _Traj) -> None:
        t.decode_left = t.turn_tokens[t.turn]
        t.turn_started = self.now

    def _decoded(self, t: _Traj) -> None:
        t.context += 1
        t.computed += 1
        t.ever = max(t.ever, t.computed)
        t.decode_left -= 1
        self.generated += 1
        if t.decode_left > 0:
            if self.mode == "resident+speculate" and t.turn < self.work.turns and \
                    t.early_until is None and t.decode_left <= self.work.early_launch_tokens:
                t.early_until = self.run_tool(self.now, _tool_time(self.rng, self.work))
            return
        if t.turn >= self.work.turns:  # the answer is written
            t.done_at = self.now
            self.res.release(t.slot)  # type: ignore[arg-type]
            t.slot = None
            return
        self._call(t)

    def _call(self, t: _Traj) -> None:
        tool_s = _tool_time(self.rng, self.work)
        drafted = self.mode == "resident+speculate" and self.work.alpha > 0
        early, t.early_until = t.early_until, None
        if drafted and self.rng.random() < self.work.alpha:
            t.waiting_until = max(self.now, self.run_tool(t.turn_started, tool_s))
        else:
            if drafted:
                self.run_tool(t.turn_started, _tool_time(self.rng, self.work))  # wasted
            t.waiting_until = max(self.now, early) if early is not None else \
                self.run_tool(self.now, tool_s)
        self.res.tool_times.observe(TOOL, tool_s)
        assert t.slot is not None
        if self.mode == "resubmit":  # the request ends: its KV a prefix-cache entry
            self.res.keep_as_cache(t.slot, t.name, range(t.computed))
            t.slot = None
        else:
            self.res.waiting(t.slot, TOOL)

    def returns(self) -> None:
        for t in self.trajs:
            if t.waiting_until is None or t.waiting_until > self.now:
                continue
            t.waiting_until = None
            t.context += self.work.response_tokens
            t.turn += 1
            t.decode_left = 0
            if self.mode == "resubmit":
                self.now += self.node.request_overhead_s
            elif t.slot is not None:
                self.res.running(t.slot)
                t.uncharged = self.work.response_tokens
            # no slot: admitted again with its whole context (admit)

    def run(self) -> dict[str, float]:
        while any(t.done_at is None for t in self.trajs):
            self.returns()
            self.admit()
            for t in self.trajs:  # admitted with everything in KV: its turn starts now
                if t.slot is not None and t.computed == t.context and t.decode_left == 0 \
                        and t.waiting_until is None and t.done_at is None and not t.uncharged:
                    self._begin_turn(t)
            if self.step():
                continue
            pending = [t.waiting_until for t in self.trajs if t.waiting_until is not None]
            if not pending:
                break
            self.idle += max(0.0, min(pending) - self.now)
            self.now = max(self.now, min(pending))
        makespan = max((t.done_at or self.now) for t in self.trajs)
        return {"makespan_s": makespan, "generated_tokens": self.generated,
                "prefill_tokens": self.prefilled, "reprefill_tokens": self.reprefilled,
                "idle_s": self.idle, "preemptions": self.preemptions,
                "kv_budget_tokens": self.res.budget_tokens,
                "peak_kv_tokens": self.res.peak_tokens,
                "tokens_per_s": self.generated / makespan if makespan else 0.0}


def simulate_node(node: NodeModel, work: WorkloadModel, trajectories: int, mode: str,
                  seed: int = 0) -> dict[str, float]:
    """One node to completion: makespan, tokens, re-prefilled tokens, engine idle time."""
    rng = random.Random(seed)
    trajs = [_Traj(str(i), [_turn_tokens(rng, work) for _ in range(work.turns)]
                   + [work.final_tokens], context=work.prompt_tokens)
             for i in range(trajectories)]
    return _Node(node, work, mode, rng, trajs).run()


def simulate_cluster(node: NodeModel, work: WorkloadModel, nodes: int,
                     trajectories: int, seed: int = 0) -> dict[str, Any]:
    """Every mode on `nodes` nodes sharing `trajectories` evenly; the slowest node decides."""
    per_node = [trajectories // nodes + (1 if k < trajectories % nodes else 0)
                for k in range(nodes)]
    out: dict[str, Any] = {"nodes": nodes, "trajectories": trajectories, "modes": {}}
    for mode in MODES:
        runs = [simulate_node(node, work, n, mode, seed + k) for k, n in enumerate(per_node) if n]
        makespan = max(r["makespan_s"] for r in runs)
        generated = sum(r["generated_tokens"] for r in runs)
        out["modes"][mode] = {"makespan_s": makespan, "tokens_per_s": generated / makespan,
                              "reprefill_tokens": sum(r["reprefill_tokens"] for r in runs),
                              "engine_idle_s": sum(r["idle_s"] for r in runs)}
    base = out["modes"]["resubmit"]["tokens_per_s"]
    out["speedup_vs_resubmit"] = {m: v["tokens_per_s"] / base for m, v in out["modes"].items()}
    return out


def models_from_benchmark(result: dict[str, Any], pressure: float = 1.0,
                          trajectories: int | None = None) -> tuple[NodeModel, WorkloadModel]:
    """The node and workload models fitted to the runs of a `perfbox bench rollout` result at
    one KV pressure (the calibration runs: predictions are then checked on the others): the
    step cost from every run's fitted forward passes, tool times from every call, the
    re-submission overhead from the resubmit runs, the token counts from the workload."""
    rows = [r for r in result["runs"] if r["kv_pressure"] == pressure and
            (trajectories is None or r["trajectories"] == trajectories)]
    if not rows:
        raise ValueError(f"no runs at KV pressure {pressure} to calibrate on")
    runs = [(name, run) for r in rows for rep in r["reps"] for name, run in rep["modes"].items()]
    fits = [run["step_model"] for _, run in runs if run.get("step_model")]
    if not fits:
        raise ValueError("the result has no fitted step costs (recorded since the KV budget)")

    def mean(key: str, values: list[dict[str, Any]]) -> float:
        return sum(v[key] for v in values) / len(values)

    resubmits = [run for name, run in runs if name == "resubmit"]
    node = NodeModel(step_overhead_s=mean("step_overhead_s", fits),
                     decode_s_per_seq=mean("decode_s_per_seq", fits),
                     prefill_s_per_token=mean("prefill_s_per_token", fits),
                     request_overhead_s=sum(r["parameters"]["o_s"] or 0.0 for r in resubmits)
                     / max(1, len(resubmits)),
                     # the recorded tool times are the client's: the service's queueing is
                     # in them already, so the simulated service must not queue them again
                     tool_workers=CLIENT_SIDE_TOOL_WORKERS)
    tokens = result["tokens"]
    prompt, answer = round(tokens["prompt"]), round(tokens["answer"])
    turns = round(runs[0][1]["parameters"]["turns_per_trajectory"])
    row = rows[0]
    per_traj = row["live_context_tokens"] / row["trajectories"]
    response = (per_traj - prompt - answer - turns * tokens["turn"]) / max(1, turns)
    calls = [c["tool_s"] for _, run in runs for c in run["tool_calls"]]
    work = WorkloadModel(turns=turns, tokens_per_turn=round(tokens["turn"]),
                         prompt_tokens=prompt, response_tokens=max(0, round(response)),
                         tool_s_mean=sum(calls) / len(calls) if calls else 1.0,
                         final_tokens=answer, tool_s_samples=tuple(calls),
                         turn_tokens_samples=tuple(int(n) for n in tokens.get("turns", ())),
                         early_launch_tokens=round(tokens.get("early_launch", 0)))
    return node, work


def describe(node: NodeModel, work: WorkloadModel) -> dict[str, Any]:
    return {"node": asdict(node), "workload": asdict(work)}
