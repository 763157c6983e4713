"""The rollout loop: many trajectories at once on one engine, tools through the tool service.

One driver thread runs continuous batching: each step holds one decode token for every
decoding sequence and prefill chunks for the rest, within the engine's token budget. A
trajectory's assistant turn streams through the tool-call parser; when a call closes, the call
goes to the tool service on a worker thread and the sequence waits. What happens then is the
mode:

- `resubmit` (today's practice, with the strongest cache a user would turn on): the request
  ends at the call; when the tool returns, the whole conversation is re-tokenized and
  re-submitted, and the engine's token-level prefix cache (the ended request's KV kept as an
  entry, evicted least recently used first when the KV budget needs room, as vLLM's automatic
  prefix caching does) saves what it can.
- `resident`: the sequence keeps its KV (perfbox.inference.residency decides under pressure)
  and only the tool's output is prefilled (delta prefill).
- `resident+speculate`: resident, plus speculative launches into the tool cache: a call is
  launched as soon as its arguments are complete in the stream (before the end tag), likely
  follow-on calls are launched when a call closes (after `compile`, a `disasm` of the same
  source), and optionally an emulated draft model that predicts each turn's call with hit rate
  alpha. A claimed future is awaited; a miss runs the tool as in `resident`.

Every mode shares one KV budget in tokens (`kv_budget_tokens`): a sequence is admitted when
its whole context fits, grows a token per decoded token, and when nothing else can give room a
running sequence is preempted and recomputed later (vLLM's default).

Speculation changes when tools run, never what the model reads or writes: with greedy decoding
the token streams of all modes are the same (tests/inference/test_rollout.py).

Replay (`forced=True`) feeds each turn's recorded text as the model's output, one decode step
per token, so decode and prefill cost is real while the content is fixed; free generation
(`forced=False`) decodes greedily up to the end of a tool call, an end-of-turn token, or a
token budget.

A training job's tasks (trajectories carrying a `TaskSample`) always generate freely, with
their own sampling settings, tools bound to their problem, and a record of what training needs:
every response token, whether the model sampled it (mask 1) or the worker inserted it (0), and
the sampled token's log-probability from the same forward pass.

`run(trajectories)` drives one batch to its end (the benchmark path). `serve()` drives batches
from many callers at once on one engine (`submit`, `cancel_batch` from any thread): their
sequences share every forward pass, and admission to KV and prefill budget goes round-robin
over the batches, so one caller's large batch cannot starve another's.

Why one module of ~800 lines: it is one state machine. Admission, a step's composition, what
follows a prefill or a decode, a tool's return and preemption all move the same sequences
through `State` under invariants they share (KV charged before it is prefilled, a preempted
sequence resumes with the token it drew, a batch's failure never reaches another's); split
across modules those invariants would have no one place to be read. What is not the state
machine lives apart: its types (rollout_types), a sequence's fields (sequence_state), the tool
side (speculator), the KV policy (residency).
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import random
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from itertools import chain, zip_longest
from typing import Any

from perfbox.inference.chat_format import plain_insertion
from perfbox.inference.engine import Engine, StepInput
from perfbox.inference.residency import Residency, ToolTimes
from perfbox.inference.rollout_types import (CallRecord, FitPut, Mode, OnEvent, RolloutCancelled,
                                             RolloutConfig, RolloutStats, RunTaskTool, ToolOutput,
                                             TrajectoryResult)
from perfbox.inference.sequence_state import Batch, BatchHandle, Seq, State
from perfbox.inference.speculator import Speculator, draft_guess
from perfbox.inference.tool_cache import ToolCache
from perfbox.inference.tool_call_parser import ToolCall, ToolCallFormat, ToolCallParser
from perfbox.inference.workload import ChatTemplate, Trajectory

log = logging.getLogger(__name__)


class Rollout:
    """Runs trajectories on one engine: run() for one batch, or serve() for many callers."""

    def __init__(self, engine: Engine, run_tool: Callable[[ToolCall], ToolOutput],
                 config: RolloutConfig, template: ChatTemplate | Any | None = None,
                 call_format: ToolCallFormat | None = None,
                 on_event: OnEvent | None = None, cache: ToolCache | None = None,
                 run_task_tool: RunTaskTool | None = None, fit_put: FitPut | None = None
                 ) -> None:
        self.engine, self.config = engine, config
        self.template = template or ChatTemplate()
        self.call_format = call_format or ToolCallFormat()
        self.on_event = on_event or (lambda kind, data: None)
        self.tool_times = ToolTimes()
        budget = config.kv_budget_tokens or engine.num_slots * engine.max_tokens_per_seq
        self.residency = Residency(engine.num_slots, self.tool_times, budget)
        self.cache = cache if cache is not None else ToolCache()
        self.speculator = Speculator(self.cache, run_tool, run_task_tool, fit_put)
        self._admissions = self._preemptions = 0
        self._step_log: list[tuple[int, int, float]] = []
        self._eos = engine.eos_tokens()
        self._rng = random.Random(config.seed)
        self._idle_s = self._decode_s = self._prefill_s = self._overhead_s = 0.0
        self._steps = 0
        self._cancelled = threading.Event()
        self._seqs: list[Seq] = []  # every live sequence, of every batch
        self._batches: list[Batch] = []
        self._inbox: list[tuple[str, Batch]] = []  # ("submit" | "cancel", batch)
        self._inbox_lock = threading.Lock()
        self._wake: cf.Future[None] = cf.Future()
        self._turn = 0  # round-robin start among batches
        self._serving = False  # serve(): a sequence's failure fails its batch only
        self._failed: dict[Batch, Exception] = {}  # batches to fail after this step

    def cancel(self) -> None:
        """Stops run() or serve() at the next step (from another thread); queued tool calls
        are dropped."""
        self._cancelled.set()
        self._poke()

    # -- batches -----------------------------------------------------------------------------

    def _new_batch(self, trajectories: list[Trajectory], on_event: OnEvent,
                   mode: Mode | None = None) -> Batch:
        import codecs

        started = time.monotonic()
        batch = Batch([], on_event, started, mode or self.config.mode)
        for traj in trajectories:
            seq = Seq(traj, started_at=started, text=traj.prompt,
                       parser=ToolCallParser(self._format_of(traj)),
                       decoder=codecs.getincrementaldecoder("utf-8")(errors="replace"),
                       batch=batch)
            if traj.task is not None:
                seq.context = list(traj.task.prompt_ids)
                seq.seed = traj.task.seed
            else:
                seq.context = self.engine.tokenize(traj.prompt)
                seq.seed = zlib.crc32(f"{self.config.seed}/{traj.id}".encode())
            seq.prompt_len = len(seq.context)
            batch.seqs.append(seq)
        return batch

    def submit(self, trajectories: list[Trajectory], on_event: OnEvent,
               mode: Mode | None = None) -> BatchHandle:
        """Adds a batch to a serving driver (any thread), in its own mode (default: the
        config's); trajectory ids must be unique among live batches."""
        _unique_ids(trajectories)
        batch = self._new_batch(trajectories, on_event, mode)
        with self._inbox_lock:
            self._inbox.append(("submit", batch))
        self._poke()
        return BatchHandle(batch)

    def cancel_batch(self, handle: BatchHandle) -> None:
        """Stops a batch's trajectories and frees their KV (any thread)."""
        with self._inbox_lock:
            self._inbox.append(("cancel", handle._batch))
        self._poke()

    def live_sequences(self) -> int:
        """Trajectories not finished, of every batch (read from any thread: approximate)."""
        return sum(1 for s in list(self._seqs) if s.state != State.DONE)

    def kv_slots_in_use(self) -> int:
        return self.residency.live()

    def _poke(self) -> None:
        wake = self._wake
        if not wake.done():
            wake.set_result(None)

    def _take_inbox(self) -> None:
        with self._inbox_lock:
            items, self._inbox = self._inbox, []
            self._wake = cf.Future()
        for kind, batch in items:
            if kind == "submit":
                live = {s.traj.id for s in self._seqs}
                taken = sorted(live & {s.traj.id for s in batch.seqs})
                if taken:  # its KV bookkeeping is by id: refuse it, never fail the others
                    batch.done.set_exception(ValueError(
                        f"trajectory ids already running: {', '.join(taken[:5])}"))
                    continue
                self._join(batch)
            elif batch in self._batches:
                self._drop_batch(batch, RolloutCancelled("cancelled by its caller"))

    def _drop_batch(self, batch: Batch, error: BaseException | None = None) -> None:
        """Ends a batch and answers its caller, whatever state the engine is in (a failed
        engine may fail again on dropping a slot: the caller must hear of it all the same)."""
        for seq in batch.seqs:
            if seq.state != State.DONE:
                try:
                    self._release(seq)
                except Exception:  # a failed engine may fail again: the caller hears all the same
                    log.exception("freeing %s", seq.public_id)
                    seq.slot = None
                if seq.future is not None:
                    seq.future.cancel()
                seq.state = State.DONE
        self._batches.remove(batch)
        if batch.mode == Mode.SPECULATE:  # its launches nobody will claim now
            before = self.cache.stats.wasted_tool_s
            self.cache.cancel_unclaimed(owners={s.traj.id for s in batch.seqs})
            batch.wasted_tool_s += self.cache.stats.wasted_tool_s - before
        ids = {id(s) for s in batch.seqs}
        self._seqs = [s for s in self._seqs if id(s) not in ids]
        if error is not None:
            batch.done.set_exception(error)
        else:
            batch.done.set_result(self._stats(batch))

    def _release(self, seq: Seq) -> None:
        if seq.slot is not None:
            self.engine.drop(seq.slot)
            self.residency.release(seq.slot)
            seq.slot = None

    def _emit(self, seq: Seq, kind: str, data: dict[str, Any]) -> None:
        data["id"] = seq.public_id
        (seq.batch.on_event if seq.batch is not None else self.on_event)(kind, data)

    # -- driver ------------------------------------------------------------------------------

    def run(self, trajectories: list[Trajectory]) -> RolloutStats:
        """Drives one batch to its end on this thread (the benchmark path)."""
        _unique_ids(trajectories)
        batch = self._new_batch(trajectories, self.on_event)
        self._join(batch)
        with cf.ThreadPoolExecutor(self.config.tool_workers) as pool:
            self.speculator.submit = pool.submit
            while not batch.done.done():
                if self._cancelled.is_set():
                    left = sum(s.state != State.DONE for s in batch.seqs)
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise RolloutCancelled(f"cancelled with {left} trajectories unfinished")
                self._iterate()
        return batch.done.result()

    def serve(self) -> None:
        """Drives every submitted batch until cancel(); run on a thread of its own."""
        self._serving = True
        with cf.ThreadPoolExecutor(self.config.tool_workers) as pool:
            self.speculator.submit = pool.submit
            while not self._cancelled.is_set():
                self._take_inbox()
                if not self._seqs:
                    cf.wait([self._wake], timeout=1.0)
                    continue
                try:
                    self._iterate()
                except Exception as e:  # the engine failed: every caller hears of it
                    log.exception("rollout driver")
                    for batch in list(self._batches):
                        self._drop_batch(batch, e)
            for batch in list(self._batches):
                self._drop_batch(batch, RolloutCancelled("the worker is stopping"))
            pool.shutdown(wait=False, cancel_futures=True)

    def _iterate(self) -> None:
        self._collect_tools(self._seqs)
        self._admit(self._seqs)
        inputs, kinds = self._compose(self._seqs)
        if inputs:
            self._step(inputs, kinds)
        else:
            self._wait_for_tools(self._seqs)
        for batch, error in list(self._failed.items()):
            if batch in self._batches:
                self._drop_batch(batch, error)
        self._failed.clear()
        for batch in [b for b in self._batches if all(s.state == State.DONE for s in b.seqs)]:
            self._drop_batch(batch)

    def _guarded(self, seq: Seq, work: Callable[[], None]) -> None:
        """Runs one sequence's bookkeeping; what it raises fails that sequence's batch only
        (its caller hears why), never the driver every caller shares. Unguarded: run()."""
        if seq.batch is not None and seq.batch in self._failed:
            return
        if seq.batch is None or not self._serving:
            work()
            return
        try:
            work()
        except Exception as e:  # anything: it fails this batch, never the shared driver
            log.exception("trajectory %s", seq.public_id)
            self._failed[seq.batch] = e

    def _order(self, seqs: list[Seq]) -> list[Seq]:
        """Live sequences round-robin over their batches, starting with a different batch
        each step: fair admission between callers."""
        if len(self._batches) <= 1:
            return seqs
        live = {id(s) for s in seqs}
        per_batch = [[s for s in b.seqs if id(s) in live] for b in self._batches]
        self._turn = (self._turn + 1) % len(per_batch)
        rotated = per_batch[self._turn:] + per_batch[:self._turn]
        return [s for s in chain.from_iterable(zip_longest(*rotated)) if s is not None]

    def _stats(self, batch: Batch) -> RolloutStats:
        wall = time.monotonic() - batch.started_at
        results = [s.result for s in batch.seqs if s.result is not None]
        generated = sum(r.generated_tokens for r in results)
        now = self._counters()
        delta = {k: now[k] - batch.base.get(k, 0.0) for k in now}
        calls = [c for r in results for c in r.calls]
        hits = sum(c.speculative_hit for c in calls)
        speculating = batch.mode == Mode.SPECULATE
        return RolloutStats(
            mode=batch.mode.value, concurrency=len(batch.seqs),
            num_slots=self.engine.num_slots, wall_s=wall, generated_tokens=generated,
            tokens_per_s=generated / wall if wall else 0.0,
            prefill_tokens=sum(r.prefill_tokens for r in results),
            reprefill_tokens=sum(r.reprefill_tokens for r in results),
            forked_tokens=sum(r.forked_tokens for r in results), idle_s=delta["idle_s"],
            steps=int(delta["steps"]), decode_s=delta["decode_s"],
            prefill_s=delta["prefill_s"], request_overhead_s=delta["overhead_s"],
            evictions=int(delta["evictions"]), spec_launched=batch.launched,
            spec_hits=hits if speculating else 0,
            spec_misses=len(calls) - hits if speculating else 0,
            wasted_tool_s=batch.wasted_tool_s, draft_alpha=self.config.draft_alpha,
            kv_budget_tokens=self.residency.budget_tokens,
            preemptions=int(delta["preemptions"]),
            cache_evictions=int(delta["cache_evictions"]),
            peak_kv_tokens=self.residency.peak_tokens,
            step_log=self._step_log[int(batch.base.get("steps", 0)):], results=results)

    def _counters(self) -> dict[str, float]:
        """The driver's cumulative figures (engine-wide: a batch reports its differences,
        which while other batches run include their share of the same forward passes)."""
        return {"idle_s": self._idle_s, "steps": self._steps, "decode_s": self._decode_s,
                "prefill_s": self._prefill_s, "overhead_s": self._overhead_s,
                "evictions": self.residency.evictions, "preemptions": self._preemptions,
                "cache_evictions": self.residency.cache_evictions}

    def _join(self, batch: Batch) -> None:
        batch.base = self._counters()
        self._batches.append(batch)
        self._seqs.extend(batch.seqs)

    def _format_of(self, traj: Trajectory) -> ToolCallFormat:
        task = traj.task
        return task.call_format if task is not None and task.call_format else self.call_format

    def _mode(self, seq: Seq) -> Mode:
        return seq.batch.mode if seq.batch is not None else self.config.mode

    def _speculating(self, seq: Seq) -> bool:
        return self._mode(seq) == Mode.SPECULATE

    def _forced(self, seq: Seq) -> bool:
        return self.config.forced and seq.task is None

    def _sampling(self, seq: Seq) -> dict[str, Any]:
        task = seq.task
        if task is None:
            return {"temperature": self.config.temperature, "seed": seq.seed}
        return {"temperature": task.temperature, "top_p": task.top_p, "top_k": task.top_k,
                "seed": seq.seed}

    def _max_turn_tokens(self, seq: Seq) -> int:
        return seq.task.max_new_tokens if seq.task else self.config.max_turn_tokens

    def _max_turns(self, seq: Seq) -> int:
        return seq.task.max_turns if seq.task else self.config.max_turns

    def _room(self, seq: Seq) -> int:
        """Response tokens this sequence may still add (tasks: its total budget and the
        context; the benchmark workload: unbounded)."""
        task = seq.task
        if task is None:
            return 1 << 30
        room = self.engine.max_tokens_per_seq - len(seq.context)
        if task.max_total_tokens:
            room = min(room, task.max_total_tokens - len(seq.response_ids))
        return room

    # -- slots -------------------------------------------------------------------------------

    def _admit(self, seqs: list[Seq]) -> None:
        for seq in self._order(seqs):
            if seq.state != State.NEEDS_SLOT:
                continue
            if self._sibling_prefilling(seq, seqs):
                continue  # fork its prompt once it is in KV instead of prefilling it twice
            if len(seq.context) + self.config.admit_headroom_tokens > \
                    self.residency.budget_tokens:
                self._finish(seq, "context")  # it can never be admitted: say so, not spin
                continue
            grant = self.residency.acquire(seq.traj.id, len(seq.context),
                                           self.config.admit_headroom_tokens)
            if grant is None:
                return  # no room without taking a running sequence's: wait (FIFO)
            self._evicted(grant.evicted_owners, grant.dropped_streams, seqs)
            reuse = self._fill_slot(seq, seqs, grant.stream, grant.reuse)
            seq.slot, seq.computed = grant.stream, reuse
            self._admissions += 1
            seq.admitted = self._admissions
            seq.state = State.PREFILL if seq.computed < len(seq.context) else State.DECODE

    def _evicted(self, owners: list[str], streams: list[int], seqs: list[Seq]) -> None:
        """Waiters whose KV the residency policy took, and the streams to clear."""
        for stream in streams:
            self.engine.drop(stream)
        for owner in owners:
            victim = next(s for s in seqs if s.traj.id == owner)
            self._emit(victim, "evicted", {"slot": victim.slot})
            victim.slot, victim.computed = None, 0

    def _grow(self, seq: Seq, tokens: int, force: bool) -> bool:
        """Charge seq's KV `tokens` more, evicting what the policy allows."""
        assert seq.slot is not None
        got = self.residency.grow(seq.slot, tokens, force)
        if got is None:
            return False
        self._evicted(*got, self._seqs)
        return True

    def _preempt(self, seq: Seq) -> None:
        """Takes a running sequence's KV (recompute preemption): it re-queues with its whole
        context and, if it was mid-turn, resumes with the token it had drawn."""
        assert seq.slot is not None
        self._emit(seq, "preempted", {"slot": seq.slot})
        self.engine.drop(seq.slot)
        self.residency.release(seq.slot)
        # mid-turn (or preempted again before its re-prefill ended): keep the drawn token
        seq.resume = seq.resume or (seq.state == State.DECODE and seq.next_token is not None)
        seq.slot, seq.computed, seq.state = None, 0, State.NEEDS_SLOT
        self._preemptions += 1

    def _fill_slot(self, seq: Seq, seqs: list[Seq], slot: int, cached: Sequence[int]
                   ) -> int:
        """Starts seq's KV in slot: forked from a group sibling's prompt, reused from its own
        prefix-cache entry (resubmit), or empty. Returns the tokens of seq.context already in
        KV."""
        donor = self._prompt_donor(seq, seqs)
        if donor is not None:
            # all but the prompt's last token: prefilling that one gives the first logits
            reuse = seq.prompt_len - 1
            self.engine.fork(donor.slot, slot)  # type: ignore[arg-type]
            self.engine.truncate(slot, reuse)
            seq.forked_tokens += reuse
            seq.ever_computed = max(seq.ever_computed, reuse)
            return reuse
        if cached:
            reuse = _common_prefix(cached, seq.context)
            self.engine.adopt(slot, len(cached))
            self.engine.truncate(slot, reuse)
            return reuse
        self.engine.start(slot)
        return 0

    def _is_fresh_sample(self, seq: Seq) -> bool:
        """A group sample that has never been in KV: its context is its prompt."""
        return (self.config.share_prompt and bool(seq.traj.group) and seq.ever_computed == 0
                and len(seq.context) == seq.prompt_len)

    def _siblings(self, seq: Seq, seqs: list[Seq]) -> list[Seq]:
        return [s for s in seqs if s is not seq and s.traj.group == seq.traj.group
                and s.context[:seq.prompt_len] == seq.context]

    def _sibling_prefilling(self, seq: Seq, seqs: list[Seq]) -> bool:
        if not self._is_fresh_sample(seq):
            return False
        return any(s.slot is not None and s.computed < seq.prompt_len
                   for s in self._siblings(seq, seqs))

    def _prompt_donor(self, seq: Seq, seqs: list[Seq]) -> Seq | None:
        """A sibling whose slot holds this sample's whole prompt, if any."""
        if not self._is_fresh_sample(seq) or seq.prompt_len < 2:
            return None
        return next((s for s in self._siblings(seq, seqs)
                     if s.slot is not None and s.computed >= seq.prompt_len), None)

    # -- one step ----------------------------------------------------------------------------

    def _compose(self, seqs: list[Seq]) -> tuple[list[StepInput], list[tuple[Seq, str]]]:
        budget = self.engine.max_batch_tokens
        inputs: list[StepInput] = []
        kinds: list[tuple[Seq, str]] = []
        ordered = self._order(seqs)
        composed: set[int] = set()  # id() of sequences with an input in this step
        for seq in ordered:  # decode first: never stalled by prefill
            if seq.state == State.DECODE and budget > 0:
                if seq.next_token is None:
                    self._begin_turn(seq)
                    if seq.next_token is None:  # free generation: needs logits first
                        continue
                if not self._room_to_decode(seq, ordered, composed):
                    continue  # preempted itself
                inputs.append(StepInput(seq.slot, [seq.next_token],  # type: ignore[arg-type]
                                        want_next=True, **self._sampling(seq)))
                kinds.append((seq, "decode"))
                composed.add(id(seq))
                budget -= 1
        for seq in ordered:  # a returning sequence's tool output: room for it first
            if seq.state == State.PREFILL and seq.slot is not None and not self._charged(seq):
                self._grow(seq, len(seq.context) - self.residency.streams[seq.slot].tokens,
                           force=False)
        ready = [s for s in ordered if s.state == State.PREFILL and self._charged(s)]
        if not inputs and not ready and not any(s.state == State.WAITING for s in ordered):
            self._unstall(ordered)
            ready = [s for s in ordered if s.state == State.PREFILL and self._charged(s)]
        for seq in ready:
            if budget > 0:
                take = min(self.config.prefill_chunk, budget, self._prefill_end(seq)
                           - seq.computed)
                chunk = seq.context[seq.computed:seq.computed + take]
                last = seq.computed + take == len(seq.context)
                inputs.append(StepInput(seq.slot, chunk,  # type: ignore[arg-type]
                                        want_next=last and not self._forced(seq),
                                        **self._sampling(seq)))
                kinds.append((seq, "prefill"))
                budget -= take
        return inputs, kinds

    def _room_to_decode(self, seq: Seq, ordered: list[Seq], composed: set[int]) -> bool:
        """A KV token for seq's next decode step: evicting cache entries and waiters (pinned
        ones too), else preempting the latest admitted running sequence not yet in this step
        (seq itself when there is none: False)."""
        while not self._grow(seq, 1, force=True):
            running = [s for s in ordered if s.slot is not None and s is not seq
                       and id(s) not in composed and s.state in (State.PREFILL, State.DECODE)]
            victim = max(running, key=lambda s: s.admitted) if running else seq
            if victim is seq and len(seq.context) + 1 > self.residency.budget_tokens:
                self._finish(seq, "context")  # it alone outgrew the KV budget
                return False
            self._preempt(victim)
            if victim is seq:
                return False
        return True

    def _charged(self, seq: Seq) -> bool:
        """seq holds KV charged for its whole context (what it is about to prefill too)."""
        return seq.slot is not None and \
            self.residency.streams[seq.slot].tokens >= len(seq.context)

    def _unstall(self, ordered: list[Seq]) -> None:
        """Nothing decodes and nobody waits for a tool, yet sequences hold KV needing room for
        their tool output: take it by force (pinned waiters, then the latest admitted)."""
        stalled = [s for s in ordered if s.state == State.PREFILL and s.slot is not None
                   and self.residency.streams[s.slot].tokens < len(s.context)]
        if not stalled:
            return
        seq = min(stalled, key=lambda s: s.admitted)
        uncharged = len(seq.context) - self.residency.streams[seq.slot].tokens  # type: ignore
        if not self._grow(seq, uncharged, force=True):
            self._preempt(max(stalled, key=lambda s: s.admitted))

    @staticmethod
    def _prefill_end(seq: Seq) -> int:
        """Where this prefill chunk must stop. A group sample's prompt stops one short of its
        end, and its last token is computed alone, as a forked sample computes it: a token's
        logits depend on the batch it was computed in (up to 0.5 apart here), so without this a
        forked sample would not draw what the same sample draws after prefilling."""
        if seq.traj.group and seq.computed < seq.prompt_len - 1:
            return seq.prompt_len - 1
        return len(seq.context)

    def _step(self, inputs: list[StepInput], kinds: list[tuple[Seq, str]]) -> None:
        out = self.engine.step(inputs)
        self._steps += 1
        total = max(1, out.num_prefill_tokens + out.num_decode_tokens)
        # a one-token prefill chunk is counted by the engine as decode; split by our kinds
        n_prefill = sum(len(i.tokens) for i, (_, k) in zip(inputs, kinds) if k == "prefill")
        self._prefill_s += out.elapsed_s * n_prefill / total
        self._decode_s += out.elapsed_s * (total - n_prefill) / total
        if self.config.record_steps:
            self._step_log.append((total - n_prefill, n_prefill, out.elapsed_s))
        for item, (seq, kind) in zip(inputs, kinds):
            slot = seq.slot
            logprob = out.logprobs.get(slot, 0.0)  # type: ignore[arg-type]
            if kind == "prefill":
                self._guarded(seq, lambda: self._after_prefill(
                    seq, item, out.next_tokens.get(slot), logprob))  # type: ignore[arg-type]
            else:
                self._guarded(seq, lambda: self._after_decode(
                    seq, out.next_tokens[slot], logprob))  # type: ignore[index]

    def _after_prefill(self, seq: Seq, item: StepInput, next_token: int | None,
                       logprob: float) -> None:
        n = len(item.tokens)
        seq.prefill_tokens += n
        seq.reprefill_tokens += max(0, min(seq.computed + n, seq.ever_computed) - seq.computed)
        seq.computed += n
        seq.ever_computed = max(seq.ever_computed, seq.computed)
        if seq.computed == len(seq.context):
            seq.state = State.DECODE
            if seq.resume:  # preempted mid-turn: it goes on with the token it had drawn
                seq.resume = False
                return
            forced = self._forced(seq)
            seq.next_token = None if forced else next_token
            seq.next_logprob = logprob
            if not forced:
                seq.turn_started_at = time.monotonic()
                if self._room(seq) <= 0:
                    self._finish(seq, "length")
                elif seq.task is not None and next_token in self._eos:
                    self._sampled_end(seq, next_token, logprob)  # type: ignore[arg-type]

    def _begin_turn(self, seq: Seq) -> None:
        """Replay: the turn's recorded tokens; speculate: the emulated draft's launch."""
        seq.turn_started_at = time.monotonic()
        if not self._forced(seq):
            return
        text = seq.traj.turns[seq.turn]
        seq.forced, seq.forced_pos = self.engine.tokenize(text), 0
        seq.next_token = seq.forced[0]
        if self._speculating(seq) and self.config.draft_alpha is not None:
            self._draft_launch(seq, text)

    def _after_decode(self, seq: Seq, predicted: int, logprob: float) -> None:
        token = seq.next_token
        assert token is not None
        seq.context.append(token)
        seq.computed += 1
        seq.ever_computed = max(seq.ever_computed, seq.computed)
        seq.tokens_out.append(token)
        seq.response_ids.append(token)
        seq.response_mask.append(1)
        seq.logprobs.append(seq.next_logprob)
        seq.turn_tokens += 1
        piece = seq.decoder.decode(self.engine.piece(token))
        seq.text += piece
        seq.turn_text += piece
        self._emit(seq, "token", {"token": token, "text": piece})
        event = seq.parser.feed(piece)
        if self._speculating(seq):
            for call in event.arguments_complete:  # early launch
                self._launch(call, seq)
        if event.closed:
            self._call(seq, event.closed[0])
            return
        if event.malformed and seq.task is not None:  # the model reads why it did not run
            self._call(seq, ToolCall("", {}, event.malformed[0]))
            return
        if self._forced(seq):
            seq.forced_pos += 1
            if seq.forced_pos < len(seq.forced):
                seq.next_token = seq.forced[seq.forced_pos]
                return
            self._end_turn_without_call(seq)
            return
        if predicted in self._eos:
            if seq.task is not None and self._room(seq) > 0:
                self._sampled_end(seq, predicted, logprob)
                return
            self._end_turn_without_call(seq)
            return
        if seq.task is not None and self._hit_stop(seq, piece):
            self._finish(seq, "stop")
            return
        if seq.turn_tokens >= self._max_turn_tokens(seq) or self._room(seq) <= 0:
            self._end_turn_without_call(seq, "length")
            return
        seq.next_token, seq.next_logprob = predicted, logprob

    def _sampled_end(self, seq: Seq, token: int, logprob: float) -> None:
        """A task's sampled end-of-sequence token ends it and stays in its response (mask 1,
        its log-prob): a trainer learns when to stop from it. It never enters KV."""
        seq.tokens_out.append(token)
        seq.response_ids.append(token)
        seq.response_mask.append(1)
        seq.logprobs.append(logprob)
        piece = seq.decoder.decode(self.engine.piece(token))
        seq.text += piece
        self._emit(seq, "token", {"token": token, "text": piece})
        self._end_turn_without_call(seq)

    @staticmethod
    def _hit_stop(seq: Seq, piece: str) -> bool:
        """A stop string completed by this piece (the model's tokens up to it stay: a
        trainer needs every sampled token it scores)."""
        assert seq.task is not None
        return any(stop in seq.turn_text[-(len(stop) + len(piece)):] for stop in seq.task.stop)

    # -- tool calls --------------------------------------------------------------------------

    def _launch(self, call: ToolCall, seq: Seq) -> None:
        if self.speculator.launch(call, seq.traj) and seq.batch is not None:
            seq.batch.launched += 1

    def _draft_launch(self, seq: Seq, turn_text: str) -> None:
        """An emulated draft model: right with probability alpha (it launches this turn's own
        call), else it launches a call that will not match (wasted tool time)."""
        calls = ToolCallParser(self.call_format).feed(turn_text).closed
        if calls:
            right = self._rng.random() < float(self.config.draft_alpha or 0.0)
            self._launch(draft_guess(calls[0], right, seq.turn), seq)

    def _call(self, seq: Seq, call: ToolCall) -> None:
        now = time.monotonic()
        seq.turn_generation_s.append(now - seq.turn_started_at)
        seq.pending_call, seq.call_closed_at = call, now
        seq.future, seq.speculative_hit = self.speculator.start(call, seq.traj,
                                                                self._speculating(seq))
        seq.state = State.WAITING
        if self._speculating(seq):
            launched = self.speculator.launch_follow_ons(call, seq.traj)
            if seq.batch is not None:
                seq.batch.launched += launched
        if self._mode(seq) == Mode.RESUBMIT:  # the request ends: its KV a prefix-cache entry
            assert seq.slot is not None
            self.residency.keep_as_cache(seq.slot, seq.traj.id, seq.context[:seq.computed])
            self.engine.drop(seq.slot, keep_kv=True)
            seq.slot = None
        elif seq.slot is not None:
            self.residency.waiting(seq.slot, call.name)
        self._emit(seq, "tool_call", {"tool": call.name, "arguments": call.arguments,
                                      "speculative_hit": seq.speculative_hit})

    def _collect_tools(self, seqs: list[Seq]) -> None:
        for seq in list(seqs):
            if seq.state == State.WAITING and seq.future is not None and seq.future.done():
                self._guarded(seq, lambda: self._tool_returned(seq))

    def _wait_for_tools(self, seqs: list[Seq]) -> None:
        futures: list[cf.Future[Any]] = [s.future for s in seqs
                                         if s.state == State.WAITING and s.future is not None]
        started = time.monotonic()
        if futures:
            cf.wait(futures + [self._wake], timeout=1.0, return_when=cf.FIRST_COMPLETED)
        self._idle_s += time.monotonic() - started

    def _tool_returned(self, seq: Seq) -> None:
        assert seq.future is not None and seq.pending_call is not None
        call = seq.pending_call
        output = self.speculator.output(seq.future, seq.traj)
        now = time.monotonic()
        self.tool_times.observe(call.name, output.tool_s)
        record = CallRecord(call.name, output.status, output.tool_s, now - seq.call_closed_at,
                            seq.speculative_hit, dict(call.arguments))
        seq.calls.append(record)
        self._emit(seq, "tool_result", {"tool": call.name, "status": output.status})
        seq.future, seq.pending_call = None, None
        seq.turn += 1
        seq.turn_tokens, seq.next_token, seq.turn_text = 0, None, ""
        seq.parser = ToolCallParser(self._format_of(seq.traj))
        response, inserted = self._insertion(seq, output.text)
        if not self._forced(seq) and seq.turn >= self._max_turns(seq):
            if seq.task is None:
                seq.text += response  # the benchmark's text shows the last output
            self._finish(seq, "max_turns")
            return
        if len(inserted) + 1 > self._room(seq):  # no room for the output and one more token
            self._finish(seq, "length")
            return
        record.inserted = response
        seq.text += response
        if seq.task is not None:
            seq.response_ids += inserted
            seq.response_mask += [0] * len(inserted)
            seq.logprobs += [0.0] * len(inserted)
            self._emit(seq, "inserted", {"tokens": inserted, "text": response})
        if self._mode(seq) == Mode.RESUBMIT:
            # the client re-sends the whole conversation as a new request (a training job's
            # task: as token ids; the benchmark workload: as text, re-tokenised)
            t0 = time.monotonic()
            if seq.task is not None:
                seq.context = seq.context + inserted
            else:
                seq.context = self.engine.tokenize(seq.text)
            self._overhead_s += time.monotonic() - t0
            seq.computed = 0
            seq.state = State.NEEDS_SLOT
            return
        seq.context += inserted
        if seq.slot is None:  # evicted while the tool ran: re-prefill everything
            seq.computed, seq.state = 0, State.NEEDS_SLOT
            return
        self.residency.running(seq.slot)  # its output is charged when room is made (_compose)
        seq.state = State.PREFILL

    def _insertion(self, seq: Seq, output: str) -> tuple[str, list[int]]:
        """The text put back after a call and its tokens. A task's tool output is tokenised
        as plain text between the template's parts: what a submission prints cannot end the
        tool turn or open another in the context the model is trained on."""
        parts = self.template.tool_response_parts
        if seq.task is None:
            response = self.template.tool_response(output)
            return response, self.engine.tokenize(response)
        before, after = parts
        return plain_insertion(self.engine, before, output, after)

    def _end_turn_without_call(self, seq: Seq, reason: str = "stop") -> None:
        seq.turn_generation_s.append(time.monotonic() - seq.turn_started_at)
        if self._forced(seq) and seq.turn + 1 < len(seq.traj.turns):
            # a recorded turn without a call that is not the last: continue with the next
            seq.turn += 1
            seq.next_token = None
            return
        self._finish(seq, reason)

    def _finish(self, seq: Seq, reason: str = "stop") -> None:
        self._release(seq)
        seq.state = State.DONE
        seq.result = TrajectoryResult(
            id=seq.public_id, wall_s=time.monotonic() - seq.started_at,
            generated_tokens=len(seq.tokens_out), prefill_tokens=seq.prefill_tokens,
            reprefill_tokens=seq.reprefill_tokens, forked_tokens=seq.forked_tokens,
            group=seq.traj.group,
            turn_generation_s=seq.turn_generation_s,
            calls=seq.calls, tokens=seq.tokens_out, text=seq.text, finish_reason=reason,
            context_tokens=len(seq.context),
            prompt_ids=seq.context[:seq.prompt_len], response_ids=seq.response_ids,
            response_mask=seq.response_mask, logprobs=seq.logprobs, task=seq.task)
        self._emit(seq, "done", {"result": seq.result})


def _unique_ids(trajectories: list[Trajectory]) -> None:
    """A batch's trajectory ids must differ: KV is held and evicted by id."""
    dup = sorted(i for i, n in Counter(t.id for t in trajectories).items() if n > 1)
    if dup:
        raise ValueError(f"trajectory ids repeat in one batch: {', '.join(dup[:5])}")


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
