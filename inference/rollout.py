"""The rollout loop: many trajectories at once on one engine, tools through the tool service.

One driver thread runs continuous batching: each step holds one decode token for every
decoding sequence and prefill chunks for the rest, within the engine's token budget. A
trajectory's assistant turn streams through the tool-call parser; when a call closes, the call
goes to the tool service on a worker thread and the sequence waits. What happens then is the
mode:

- `resubmit` (today's practice): the request ends at the call; when the tool returns, the whole
  conversation is re-tokenized and re-submitted, and the engine's prefix cache (the KV a slot
  still holds from the ended request, until another request takes the slot) saves what it can.
- `resident`: the sequence keeps its KV slot (perfbox.inference.residency decides under
  pressure) and only the tool's output is prefilled (delta prefill).
- `resident+speculate`: resident, plus speculative launches into the tool cache: a call is
  launched as soon as its arguments are complete in the stream (before the end tag), likely
  follow-on calls are launched when a call closes (after `compile`, a `disasm` of the same
  source), and optionally an emulated draft model that predicts each turn's call with hit rate
  alpha. A claimed future is awaited; a miss runs the tool as in `resident`.

Speculation changes when tools run, never what the model reads or writes: with greedy decoding
the token streams of all modes are the same (tests/inference/test_rollout.py).

Replay (`forced=True`) feeds each turn's recorded text as the model's output, one decode step
per token, so decode and prefill cost is real while the content is fixed; free generation
(`forced=False`) decodes greedily up to the end of a tool call, an end-of-turn token, or a
token budget.
"""

from __future__ import annotations

import concurrent.futures as cf
import enum
import logging
import random
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from perfbox.inference.engine import Engine, StepInput
from perfbox.inference.residency import Residency, ToolTimes
from perfbox.inference.tool_cache import ToolCache
from perfbox.inference.toolcall import ToolCall, ToolCallFormat, ToolCallParser
from perfbox.inference.tools_bridge import ToolOutput
from perfbox.inference.workload import ChatTemplate, Trajectory

log = logging.getLogger(__name__)


class RolloutCancelled(RuntimeError):
    """cancel() was called before every trajectory finished."""


class Mode(str, enum.Enum):
    RESUBMIT = "resubmit"
    RESIDENT = "resident"
    SPECULATE = "resident+speculate"


class State(enum.IntEnum):
    """A sequence's lifecycle; ordered: DONE is last."""

    NEEDS_SLOT = 0  # has tokens to prefill but no KV slot
    PREFILL = 1  # in a slot, prefilling pending tokens
    DECODE = 2  # generating (or replaying) the assistant turn
    WAITING = 3  # its tool call runs
    DONE = 4


@dataclass
class RolloutConfig:
    mode: Mode = Mode.RESIDENT
    forced: bool = True  # replay the recorded turns; False: greedy free generation
    max_turn_tokens: int = 256  # free generation: tokens per turn at most
    max_turns: int = 8  # free generation: turns per trajectory at most
    prefill_chunk: int = 256  # tokens of one sequence's prefill per step
    tool_workers: int = 8  # tool calls in flight at once
    draft_alpha: float | None = None  # speculate: emulated draft hit rate (None: no draft)
    seed: int = 0
    temperature: float = 0.0  # free generation: 0 greedy; above, each sample draws its own
    share_prompt: bool = True  # samples of a group fork the first one's prompt KV


@dataclass
class CallRecord:
    """One tool call of a trajectory."""

    name: str
    status: str
    tool_s: float  # the tool's own wall time
    waited_s: float  # from the call's end tag to its output being available
    speculative_hit: bool


@dataclass
class TrajectoryResult:
    id: str
    wall_s: float
    generated_tokens: int
    prefill_tokens: int  # all tokens prefilled, prompts included
    reprefill_tokens: int  # tokens prefilled again that had been in KV before
    forked_tokens: int  # prompt tokens copied from a group sibling's KV instead of prefilled
    group: str  # its GRPO group ("" when none)
    turn_generation_s: list[float]  # per turn: first token to end of call (G)
    calls: list[CallRecord]
    tokens: list[int]  # the assistant tokens, all turns
    text: str  # the assistant turns and tool outputs as the model saw them


@dataclass
class RolloutStats:
    mode: str
    concurrency: int
    num_slots: int
    wall_s: float
    generated_tokens: int
    tokens_per_s: float
    prefill_tokens: int
    reprefill_tokens: int
    forked_tokens: int
    idle_s: float  # the engine had nothing to run: every live sequence waited for a tool
    steps: int
    decode_s: float  # engine time of steps, attributed to decode tokens by token share
    prefill_s: float
    request_overhead_s: float  # resubmit: re-tokenising and re-admitting whole conversations
    evictions: int
    spec_launched: int
    spec_hits: int
    spec_misses: int
    wasted_tool_s: float
    draft_alpha: float | None
    results: list[TrajectoryResult] = field(default_factory=list)


@dataclass
class _Seq:
    traj: Trajectory
    state: State = State.NEEDS_SLOT
    slot: int | None = None
    context: list[int] = field(default_factory=list)  # tokens that belong in KV, in order
    computed: int = 0  # prefix of context already in the slot's KV
    ever_computed: int = 0  # longest prefix ever held in KV (for re-prefill accounting)
    text: str = ""  # the conversation text (what a resubmitting client re-sends)
    turn: int = 0
    forced: list[int] = field(default_factory=list)
    forced_pos: int = 0
    next_token: int | None = None
    turn_tokens: int = 0
    parser: ToolCallParser = field(default_factory=ToolCallParser)
    decoder: Any = None  # incremental UTF-8 decoder for the streamed pieces
    pending_call: ToolCall | None = None
    future: cf.Future[ToolOutput] | None = None
    call_closed_at: float = 0.0
    speculative_hit: bool = False
    turn_started_at: float = 0.0
    started_at: float = 0.0
    result: TrajectoryResult | None = None
    tokens_out: list[int] = field(default_factory=list)
    prefill_tokens: int = 0
    reprefill_tokens: int = 0
    forked_tokens: int = 0
    prompt_len: int = 0
    seed: int = 0
    turn_generation_s: list[float] = field(default_factory=list)
    calls: list[CallRecord] = field(default_factory=list)


class Rollout:
    """Runs trajectories to completion on one engine (call run() once)."""

    def __init__(self, engine: Engine, run_tool: Callable[[ToolCall], ToolOutput],
                 config: RolloutConfig, template: ChatTemplate | None = None,
                 call_format: ToolCallFormat | None = None,
                 on_event: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        self.engine, self.run_tool, self.config = engine, run_tool, config
        self.template = template or ChatTemplate()
        self.call_format = call_format or ToolCallFormat()
        self.on_event = on_event or (lambda kind, data: None)
        self.tool_times = ToolTimes()
        self.residency = Residency(engine.num_slots, self.tool_times)
        self.cache = ToolCache()
        self._slot_cache: dict[int, tuple[str, list[int]]] = {}  # resubmit: slot -> KV held
        self._eos = engine.eos_tokens()
        self._rng = random.Random(config.seed)
        self._idle_s = self._decode_s = self._prefill_s = self._overhead_s = 0.0
        self._steps = 0
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        """Stops run() at its next step (from another thread); queued tool calls are dropped."""
        self._cancelled.set()

    # -- driver ------------------------------------------------------------------------------

    def run(self, trajectories: list[Trajectory]) -> RolloutStats:
        import codecs

        started = time.monotonic()
        seqs = []
        for traj in trajectories:
            seq = _Seq(traj, started_at=started, text=traj.prompt,
                       parser=ToolCallParser(self.call_format),
                       decoder=codecs.getincrementaldecoder("utf-8")(errors="replace"))
            seq.context = self.engine.tokenize(traj.prompt)
            seq.prompt_len = len(seq.context)
            seq.seed = zlib.crc32(f"{self.config.seed}/{traj.id}".encode())
            seqs.append(seq)
        with cf.ThreadPoolExecutor(self.config.tool_workers) as pool:
            self._pool = pool
            while any(s.state != State.DONE for s in seqs):
                if self._cancelled.is_set():
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise RolloutCancelled(f"cancelled with {sum(s.state != State.DONE for s in seqs)}"
                                           " trajectories unfinished")
                self._collect_tools(seqs)
                self._admit(seqs)
                inputs, kinds = self._compose(seqs)
                if not inputs:
                    self._wait_for_tools(seqs)
                    continue
                self._step(inputs, kinds)
            self.cache.cancel_unclaimed()
        wall = time.monotonic() - started
        results = [s.result for s in seqs if s.result is not None]
        generated = sum(r.generated_tokens for r in results)
        cs = self.cache.stats
        return RolloutStats(
            mode=self.config.mode.value, concurrency=len(trajectories),
            num_slots=self.engine.num_slots, wall_s=wall, generated_tokens=generated,
            tokens_per_s=generated / wall if wall else 0.0,
            prefill_tokens=sum(r.prefill_tokens for r in results),
            reprefill_tokens=sum(r.reprefill_tokens for r in results),
            forked_tokens=sum(r.forked_tokens for r in results), idle_s=self._idle_s,
            steps=self._steps, decode_s=self._decode_s, prefill_s=self._prefill_s,
            request_overhead_s=self._overhead_s, evictions=self.residency.evictions,
            spec_launched=cs.launched, spec_hits=cs.hits if self._speculating else 0,
            spec_misses=cs.misses if self._speculating else 0,
            wasted_tool_s=cs.wasted_tool_s, draft_alpha=self.config.draft_alpha,
            results=results)

    @property
    def _speculating(self) -> bool:
        return self.config.mode == Mode.SPECULATE

    # -- slots -------------------------------------------------------------------------------

    def _admit(self, seqs: list[_Seq]) -> None:
        for seq in seqs:
            if seq.state != State.NEEDS_SLOT:
                continue
            if self._sibling_prefilling(seq, seqs):
                continue  # fork its prompt once it is in KV instead of prefilling it twice
            prefer = self._cached_slot(seq)
            got = self.residency.acquire(seq.traj.id, prefer)
            if got is None:
                return  # every slot decodes: wait (FIFO)
            slot, evicted = got
            if evicted is not None:
                victim = next(s for s in seqs if s.traj.id == evicted)
                victim.slot, victim.computed = None, 0
                self.engine.drop(slot)
                self.on_event("evicted", {"id": evicted, "slot": slot})
            reuse = self._fill_slot(seq, seqs, slot)
            seq.slot, seq.computed = slot, reuse
            seq.state = State.PREFILL if seq.computed < len(seq.context) else State.DECODE

    def _fill_slot(self, seq: _Seq, seqs: list[_Seq], slot: int) -> int:
        """Starts seq's KV in slot: forked from a group sibling's prompt, reused from the
        prefix cache (resubmit), or empty. Returns the tokens of seq.context already in KV."""
        cached = self._slot_cache.pop(slot, None)  # only resubmit fills the slot cache
        donor = self._prompt_donor(seq, seqs)
        if donor is not None:
            # all but the prompt's last token: prefilling that one gives the first logits
            reuse = seq.prompt_len - 1
            self.engine.fork(donor.slot, slot)  # type: ignore[arg-type]
            self.engine.truncate(slot, reuse)
            seq.forked_tokens += reuse
            seq.ever_computed = max(seq.ever_computed, reuse)
            return reuse
        if cached is not None and cached[0] == seq.traj.id:
            held = cached[1]
            reuse = _common_prefix(held, seq.context)
            self.engine.adopt(slot, len(held))
            self.engine.truncate(slot, reuse)
            return reuse
        self.engine.start(slot)
        return 0

    def _is_fresh_sample(self, seq: _Seq) -> bool:
        """A group sample that has never been in KV: its context is its prompt."""
        return (self.config.share_prompt and bool(seq.traj.group) and seq.ever_computed == 0
                and len(seq.context) == seq.prompt_len)

    def _siblings(self, seq: _Seq, seqs: list[_Seq]) -> list[_Seq]:
        return [s for s in seqs if s is not seq and s.traj.group == seq.traj.group
                and s.context[:seq.prompt_len] == seq.context]

    def _sibling_prefilling(self, seq: _Seq, seqs: list[_Seq]) -> bool:
        if not self._is_fresh_sample(seq):
            return False
        return any(s.slot is not None and s.computed < seq.prompt_len
                   for s in self._siblings(seq, seqs))

    def _prompt_donor(self, seq: _Seq, seqs: list[_Seq]) -> _Seq | None:
        """A sibling whose slot holds this sample's whole prompt, if any."""
        if not self._is_fresh_sample(seq) or seq.prompt_len < 2:
            return None
        return next((s for s in self._siblings(seq, seqs)
                     if s.slot is not None and s.computed >= seq.prompt_len), None)

    def _cached_slot(self, seq: _Seq) -> int | None:
        if self.config.mode != Mode.RESUBMIT:
            return None
        return next((slot for slot, (owner, _) in self._slot_cache.items()
                     if owner == seq.traj.id), None)

    # -- one step ----------------------------------------------------------------------------

    def _compose(self, seqs: list[_Seq]) -> tuple[list[StepInput], list[tuple[_Seq, str]]]:
        budget = self.engine.max_batch_tokens
        inputs: list[StepInput] = []
        kinds: list[tuple[_Seq, str]] = []
        for seq in seqs:  # decode first: never stalled by prefill
            if seq.state == State.DECODE and budget > 0:
                if seq.next_token is None:
                    self._begin_turn(seq)
                    if seq.next_token is None:  # free generation: needs logits first
                        continue
                inputs.append(StepInput(seq.slot, [seq.next_token],  # type: ignore[arg-type]
                                        want_next=True, temperature=self.config.temperature,
                                        seed=seq.seed))
                kinds.append((seq, "decode"))
                budget -= 1
        for seq in seqs:
            if seq.state == State.PREFILL and budget > 0:
                take = min(self.config.prefill_chunk, budget, self._prefill_end(seq)
                           - seq.computed)
                chunk = seq.context[seq.computed:seq.computed + take]
                last = seq.computed + take == len(seq.context)
                inputs.append(StepInput(seq.slot, chunk,  # type: ignore[arg-type]
                                        want_next=last and not self.config.forced,
                                        temperature=self.config.temperature, seed=seq.seed))
                kinds.append((seq, "prefill"))
                budget -= take
        return inputs, kinds

    @staticmethod
    def _prefill_end(seq: _Seq) -> int:
        """Where this prefill chunk must stop. A group sample's prompt stops one short of its
        end, and its last token is computed alone, as a forked sample computes it: a token's
        logits depend on the batch it was computed in (up to 0.5 apart here), so without this a
        forked sample would not draw what the same sample draws after prefilling."""
        if seq.traj.group and seq.computed < seq.prompt_len - 1:
            return seq.prompt_len - 1
        return len(seq.context)

    def _step(self, inputs: list[StepInput], kinds: list[tuple[_Seq, str]]) -> None:
        out = self.engine.step(inputs)
        self._steps += 1
        total = max(1, out.num_prefill_tokens + out.num_decode_tokens)
        # a one-token prefill chunk is counted by the engine as decode; split by our kinds
        n_prefill = sum(len(i.tokens) for i, (_, k) in zip(inputs, kinds) if k == "prefill")
        self._prefill_s += out.elapsed_s * n_prefill / total
        self._decode_s += out.elapsed_s * (total - n_prefill) / total
        for item, (seq, kind) in zip(inputs, kinds):
            if kind == "prefill":
                self._after_prefill(seq, item, out.next_tokens.get(seq.slot))  # type: ignore
            else:
                self._after_decode(seq, out.next_tokens[seq.slot])  # type: ignore[index]

    def _after_prefill(self, seq: _Seq, item: StepInput, next_token: int | None) -> None:
        n = len(item.tokens)
        seq.prefill_tokens += n
        seq.reprefill_tokens += max(0, min(seq.computed + n, seq.ever_computed) - seq.computed)
        seq.computed += n
        seq.ever_computed = max(seq.ever_computed, seq.computed)
        if seq.computed == len(seq.context):
            seq.state = State.DECODE
            seq.next_token = None if self.config.forced else next_token
            if not self.config.forced:
                seq.turn_started_at = time.monotonic()

    def _begin_turn(self, seq: _Seq) -> None:
        """Replay: the turn's recorded tokens; speculate: the emulated draft's launch."""
        seq.turn_started_at = time.monotonic()
        if not self.config.forced:
            return
        text = seq.traj.turns[seq.turn]
        seq.forced, seq.forced_pos = self.engine.tokenize(text), 0
        seq.next_token = seq.forced[0]
        if self._speculating and self.config.draft_alpha is not None:
            self._draft_launch(seq, text)

    def _after_decode(self, seq: _Seq, predicted: int) -> None:
        token = seq.next_token
        assert token is not None
        seq.context.append(token)
        seq.computed += 1
        seq.ever_computed = max(seq.ever_computed, seq.computed)
        seq.tokens_out.append(token)
        seq.turn_tokens += 1
        piece = seq.decoder.decode(self.engine.piece(token)) if hasattr(self.engine, "piece") \
            else self.engine.detokenize([token])
        seq.text += piece
        self.on_event("token", {"id": seq.traj.id, "token": token, "text": piece})
        event = seq.parser.feed(piece)
        if self._speculating:
            for call in event.arguments_complete:  # early launch
                self._launch(call, seq)
        if event.closed:
            self._call(seq, event.closed[0])
            return
        if self.config.forced:
            seq.forced_pos += 1
            if seq.forced_pos < len(seq.forced):
                seq.next_token = seq.forced[seq.forced_pos]
                return
            self._end_turn_without_call(seq)
            return
        if predicted in self._eos or seq.turn_tokens >= self.config.max_turn_tokens:
            self._end_turn_without_call(seq)
            return
        seq.next_token = predicted

    # -- tool calls --------------------------------------------------------------------------

    def _launch(self, call: ToolCall, seq: _Seq) -> None:
        self.cache.launch(call.key, lambda c=call: self.run_tool(c), self._pool.submit,
                          response_id=seq.traj.id)

    def _draft_launch(self, seq: _Seq, turn_text: str) -> None:
        """An emulated draft model: right with probability alpha (it launches this turn's own
        call), else it launches a call that will not match (wasted tool time)."""
        parser = ToolCallParser(self.call_format)
        calls = parser.feed(turn_text).closed
        if not calls:
            return
        call = calls[0]
        if self._rng.random() >= float(self.config.draft_alpha or 0.0):
            call = ToolCall(call.name, {**call.arguments, "draft_guess": seq.turn}, call.raw)
        self._launch(call, seq)

    def _call(self, seq: _Seq, call: ToolCall) -> None:
        now = time.monotonic()
        seq.turn_generation_s.append(now - seq.turn_started_at)
        seq.pending_call, seq.call_closed_at, seq.speculative_hit = call, now, False
        future = self.cache.claim(call.key) if self._speculating else None
        if future is not None:
            seq.speculative_hit = True
        else:
            future = self._pool.submit(self.run_tool, call)
        seq.future = future
        seq.state = State.WAITING
        if self._speculating and call.name == "compile":  # follow-on: disasm comes next
            self._launch(ToolCall("disasm", dict(call.arguments), call.raw), seq)
        if self.config.mode == Mode.RESUBMIT:  # the request ends here
            assert seq.slot is not None
            self._slot_cache[seq.slot] = (seq.traj.id, list(seq.context[:seq.computed]))
            self.engine.drop(seq.slot, keep_kv=True)
            self.residency.release(seq.slot)
            seq.slot = None
        elif seq.slot is not None:
            self.residency.waiting(seq.slot, call.name)
        self.on_event("tool_call", {"id": seq.traj.id, "tool": call.name,
                                    "speculative_hit": seq.speculative_hit})

    def _collect_tools(self, seqs: list[_Seq]) -> None:
        for seq in seqs:
            if seq.state == State.WAITING and seq.future is not None and seq.future.done():
                self._tool_returned(seq)

    def _wait_for_tools(self, seqs: list[_Seq]) -> None:
        futures = [s.future for s in seqs if s.state == State.WAITING and s.future is not None]
        started = time.monotonic()
        if futures:
            cf.wait(futures, timeout=1.0, return_when=cf.FIRST_COMPLETED)
        self._idle_s += time.monotonic() - started

    def _tool_returned(self, seq: _Seq) -> None:
        assert seq.future is not None and seq.pending_call is not None
        try:
            output = seq.future.result()
        except Exception as e:  # the service failed: the model reads the error
            output = ToolOutput(f"TOOL_ERROR: {type(e).__name__}: {e}"[:600], "TOOL_ERROR", 0.0)
        now = time.monotonic()
        self.tool_times.observe(seq.pending_call.name, output.tool_s)
        seq.calls.append(CallRecord(seq.pending_call.name, output.status, output.tool_s,
                                    now - seq.call_closed_at, seq.speculative_hit))
        self.on_event("tool_result", {"id": seq.traj.id, "tool": seq.pending_call.name,
                                      "status": output.status})
        seq.future, seq.pending_call = None, None
        response = self.template.tool_response(output.text)
        seq.text += response
        seq.turn += 1
        seq.turn_tokens, seq.next_token = 0, None
        seq.parser = ToolCallParser(self.call_format)
        if not self.config.forced and seq.turn >= self.config.max_turns:
            self._finish(seq)
            return
        if self.config.mode == Mode.RESUBMIT:
            # the client re-sends the whole conversation as a new request
            t0 = time.monotonic()
            seq.context = self.engine.tokenize(seq.text)
            self._overhead_s += time.monotonic() - t0
            seq.computed = 0
            seq.state = State.NEEDS_SLOT
            return
        seq.context += self.engine.tokenize(response)
        if seq.slot is None:  # evicted while the tool ran: re-prefill everything
            seq.computed, seq.state = 0, State.NEEDS_SLOT
            return
        self.residency.decoding(seq.slot)
        seq.state = State.PREFILL

    def _end_turn_without_call(self, seq: _Seq) -> None:
        seq.turn_generation_s.append(time.monotonic() - seq.turn_started_at)
        if self.config.forced and seq.turn + 1 < len(seq.traj.turns):
            # a recorded turn without a call that is not the last: continue with the next
            seq.turn += 1
            seq.next_token = None
            return
        self._finish(seq)

    def _finish(self, seq: _Seq) -> None:
        if seq.slot is not None:
            self.engine.drop(seq.slot)
            self.residency.release(seq.slot)
            self._slot_cache.pop(seq.slot, None)
            seq.slot = None
        seq.state = State.DONE
        seq.result = TrajectoryResult(
            id=seq.traj.id, wall_s=time.monotonic() - seq.started_at,
            generated_tokens=len(seq.tokens_out), prefill_tokens=seq.prefill_tokens,
            reprefill_tokens=seq.reprefill_tokens, forked_tokens=seq.forked_tokens,
            group=seq.traj.group,
            turn_generation_s=seq.turn_generation_s,
            calls=seq.calls, tokens=seq.tokens_out, text=seq.text)
        self.on_event("done", {"id": seq.traj.id, "result": seq.result})


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
