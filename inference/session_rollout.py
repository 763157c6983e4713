"""The rollout loop for engines that schedule their own batches (vLLM): one asyncio task per
trajectory, a turn at a time.

The modes are those of perfbox.inference.rollout, on vLLM's own mechanisms:
- `resubmit`: every turn is a fresh request with the whole conversation; vLLM's prefix cache
  serves what it still holds (the strongest form of today's practice);
- `resident`: one streaming-input session per trajectory (perfbox.inference.engines.
  vllm_sessions): the sequence keeps its KV while the tool runs and only the tool's output is
  prefilled; vLLM's scheduler decides what waits under memory pressure;
- `resident+speculate`: resident, plus early launch as soon as a call's arguments are complete
  in the stream and the follow-on disasm after a compile, through the same ToolCache.
Decoding never depends on the mode: with greedy decoding (or replay) the tokens are the same.

A turn ends at the chat template's end-of-turn token (Hermes/Qwen-style models close the
assistant turn right after `</tool_call>`), at an end-of-sequence token or at max_turn_tokens.

A training job's task (a trajectory carrying a TaskSample) generates with its own sampling
settings and tools, and records every response token with its mask (1 sampled, 0 inserted)
and the sampled tokens' log-probs from vLLM (`logprobs_mode=processed_logprobs`: under the
distribution each was drawn from), as perfbox.inference.rollout does on the embedded engine.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from perfbox.inference.chat_format import ToolTurnTemplate, plain_insertion
from perfbox.inference.engine import SessionEngine, SessionTurn, TurnOutput
from perfbox.inference.rollout_types import (CallRecord, FitPut, Mode, OnEvent, RolloutConfig,
                                             RolloutStats, RunTaskTool, ToolOutput,
                                             TrajectoryResult)
from perfbox.inference.speculator import Speculator
from perfbox.inference.tool_cache import ToolCache
from perfbox.inference.tool_call_parser import ToolCall, ToolCallFormat, ToolCallParser
from perfbox.inference.workload import ChatTemplate, Trajectory


@dataclass
class _Counts:
    prefill: int = 0
    reprefill: int = 0
    calls: list[CallRecord] = field(default_factory=list)
    turn_generation_s: list[float] = field(default_factory=list)


class SessionRollout:
    """Runs trajectories on a VllmSessions engine (call run() once, inside an event loop)."""

    def __init__(self, engine: SessionEngine, run_tool: Callable[[ToolCall], ToolOutput],
                 config: RolloutConfig, template: ToolTurnTemplate | None = None,
                 call_format: ToolCallFormat | None = None, on_event: OnEvent | None = None,
                 cache: ToolCache | None = None, run_task_tool: RunTaskTool | None = None,
                 fit_put: FitPut | None = None) -> None:
        self.engine, self.config = engine, config
        self.on_event = on_event or (lambda kind, data: None)
        self.template: ToolTurnTemplate = template or ChatTemplate()
        self.call_format = call_format or ToolCallFormat()
        self.cache = cache if cache is not None else ToolCache()
        self.speculator = Speculator(self.cache, run_tool, run_task_tool, fit_put)
        self.end_of_turn = engine.token_id(self.template.end)
        self._pool = cf.ThreadPoolExecutor(config.tool_workers)
        self.speculator.submit = self._pool.submit

    async def run(self, trajectories: list[Trajectory]) -> RolloutStats:
        started = time.monotonic()
        try:
            results = await asyncio.gather(*(self._trajectory(t, started)
                                             for t in trajectories))
        finally:
            self.cache.cancel_unclaimed(owners={t.id for t in trajectories})
            self._pool.shutdown(wait=False, cancel_futures=True)
        wall = time.monotonic() - started
        generated = sum(r.generated_tokens for r in results)
        cs, spec = self.cache.stats, self.config.mode == Mode.SPECULATE
        return RolloutStats(
            mode=self.config.mode.value, concurrency=len(trajectories), num_slots=0,
            wall_s=wall, generated_tokens=generated,
            tokens_per_s=generated / wall if wall else 0.0,
            prefill_tokens=sum(r.prefill_tokens for r in results),
            reprefill_tokens=sum(r.reprefill_tokens for r in results), forked_tokens=0,
            idle_s=0.0, steps=0, decode_s=0.0, prefill_s=0.0, request_overhead_s=0.0,
            evictions=0, spec_launched=cs.launched, spec_hits=cs.hits if spec else 0,
            spec_misses=cs.misses if spec else 0, wasted_tool_s=cs.wasted_tool_s,
            draft_alpha=None, results=list(results))

    # -- one trajectory ----------------------------------------------------------------------

    async def _trajectory(self, traj: Trajectory, started: float) -> TrajectoryResult:
        if traj.task is not None:
            return await self._task_trajectory(traj, started)
        seed = zlib.crc32(f"{self.config.seed}/{traj.id}".encode())
        context = self.engine.tokenize(traj.prompt)
        new = list(context)  # tokens not yet sent to the engine
        counts, generated, text = _Counts(), [], traj.prompt
        session = None if self.config.mode == Mode.RESUBMIT else self.engine.session(traj.id)
        held = 0  # resubmit: tokens the previous request had in KV
        try:
            for turn in range(self._turns(traj)):
                forced = self._forced(traj, turn)
                params = self.engine.params(
                    len(forced) if forced else self.config.max_turn_tokens,
                    self.config.temperature, seed + turn, forced,
                    [self.end_of_turn] if self.end_of_turn is not None else None)
                out, call, turn_s = await self._turn(session, context, new, params, traj,
                                                     counts, held)
                held = len(context) + len(out.tokens)
                context += out.tokens
                generated += out.tokens
                text += self.engine.detokenize(out.tokens)
                counts.turn_generation_s.append(turn_s)
                if call is None:
                    break
                output = await self._tool(call, traj, counts)
                response = self.template.tool_response(output.text)
                if out.tokens and out.tokens[-1] == self.end_of_turn:
                    response = response[len(self.template.end):]  # the model closed the turn
                text += response
                new = self.engine.tokenize(response)
                context += new
        finally:
            if session is not None:
                await session.close()
        result = TrajectoryResult(
            id=traj.id, wall_s=time.monotonic() - started, generated_tokens=len(generated),
            prefill_tokens=counts.prefill, reprefill_tokens=counts.reprefill, forked_tokens=0,
            group=traj.group, turn_generation_s=counts.turn_generation_s, calls=counts.calls,
            tokens=generated, text=text)
        self.on_event("done", {"id": traj.id, "result": result})
        return result

    def _turns(self, traj: Trajectory) -> int:
        return len(traj.turns) if self.config.forced else self.config.max_turns

    def _forced(self, traj: Trajectory, turn: int) -> list[int] | None:
        """Replay: the recorded turn, closed with the end-of-turn token as the model would."""
        if not self.config.forced:
            return None
        tokens = self.engine.tokenize(traj.turns[turn])
        return tokens + ([self.end_of_turn] if self.end_of_turn is not None else [])

    async def _turn(self, session: SessionTurn | None, context: list[int], new: list[int],
                    params: Any, traj: Trajectory, counts: _Counts, held: int
                    ) -> tuple[TurnOutput, ToolCall | None, float]:
        out, parser, call = TurnOutput(), ToolCallParser(self.call_format), None
        turn_started = time.monotonic()
        turn_s = 0.0
        if session is None:  # resubmit: the whole conversation again
            stream = self.engine.request(list(context), params, out)
        else:
            stream = session.turn(list(new), params, out)
        async for delta in stream:
            before = self.engine.detokenize(out.tokens)
            out.tokens += delta
            piece = self.engine.detokenize(out.tokens)[len(before):]
            self.on_event("tokens", {"id": _public(traj), "tokens": delta, "text": piece})
            event = parser.feed(piece)
            if self.config.mode == Mode.SPECULATE:
                for ready in event.arguments_complete:  # early launch
                    self._launch(ready, traj)
            if event.closed and call is None:
                call, turn_s = event.closed[0], time.monotonic() - turn_started
            elif event.malformed and call is None and traj.task is not None:
                call = ToolCall("", {}, event.malformed[0])  # the model reads why not
                turn_s = time.monotonic() - turn_started
        if session is None:
            counts.prefill += len(context) - out.cached_tokens
            counts.reprefill += max(0, held - out.cached_tokens)
        else:
            counts.prefill += len(new)
        return out, call, turn_s or time.monotonic() - turn_started

    # -- tools -------------------------------------------------------------------------------

    def _launch(self, call: ToolCall, traj: Trajectory) -> None:
        self.speculator.launch(call, traj)

    async def _tool(self, call: ToolCall, traj: Trajectory, counts: _Counts) -> ToolOutput:
        closed_at = time.monotonic()
        speculating = self.config.mode == Mode.SPECULATE
        future, hit = self.speculator.start(call, traj, speculating)
        self.on_event("tool_call", {"id": _public(traj), "tool": call.name,
                                    "speculative_hit": hit})
        if speculating:
            self.speculator.launch_follow_ons(call, traj)
        try:
            await asyncio.wrap_future(future)
        except Exception:  # noqa: S110  (speculator.output turns it into what the model reads)
            pass
        output = self.speculator.output(future, traj)
        counts.calls.append(CallRecord(call.name, output.status, output.tool_s,
                                       time.monotonic() - closed_at, hit, dict(call.arguments)))
        self.on_event("tool_result", {"id": _public(traj), "tool": call.name,
                                      "status": output.status})
        return output

    # -- a training job's task ---------------------------------------------------------------

    async def _task_trajectory(self, traj: Trajectory, started: float) -> TrajectoryResult:
        task = traj.task
        assert task is not None
        context = list(task.prompt_ids)
        new = list(context)
        rec, counts = _Response(), _Counts()
        session = None if self.config.mode == Mode.RESUBMIT else self.engine.session(traj.id)
        held, finish = 0, "stop"
        try:
            for turn in range(task.max_turns):
                room = self._room(task, context, rec)
                if room <= 0:
                    finish = "length"
                    break
                stops = [self.end_of_turn] if self.end_of_turn is not None else None
                params = self.engine.params(min(task.max_new_tokens, room), task.temperature,
                                            (task.seed + turn) & 0xFFFFFFFF, None, stops,
                                            task.top_p, task.top_k, logprobs=True)
                out, call, turn_s = await self._turn(session, context, new, params, traj,
                                                     counts, held)
                held = len(context) + len(out.tokens)
                context += out.tokens
                rec.sampled(out, self.engine.detokenize(out.tokens))
                counts.turn_generation_s.append(turn_s)
                if any(stop in rec.turn_text for stop in task.stop):
                    break
                if call is None:
                    finish = "length" if out.finish_reason == "length" else "stop"
                    break
                output = await self._tool(call, traj, counts)
                if turn + 1 >= task.max_turns:
                    finish = "max_turns"
                    break
                before, after = self.template.tool_response_parts
                if out.tokens and out.tokens[-1] == self.end_of_turn:
                    before = before[len(self.template.end):]  # the model closed the turn
                response, new = plain_insertion(self.engine, before, output.text, after)
                if len(new) + 1 > self._room(task, context, rec):
                    finish = "length"
                    break
                counts.calls[-1].inserted = response
                rec.inserted(new, response)
                self.on_event("inserted", {"id": task.public_id, "tokens": new,
                                           "text": response})
                context += new
        finally:
            if session is not None:
                await session.close()
        result = TrajectoryResult(
            id=task.public_id, wall_s=time.monotonic() - started,
            generated_tokens=sum(rec.mask), prefill_tokens=counts.prefill,
            reprefill_tokens=counts.reprefill, forked_tokens=0, group=traj.group,
            turn_generation_s=counts.turn_generation_s, calls=counts.calls,
            tokens=[t for t, m in zip(rec.ids, rec.mask) if m], text=rec.text,
            finish_reason=finish, prompt_ids=list(task.prompt_ids), response_ids=rec.ids,
            response_mask=rec.mask, logprobs=rec.logprobs, task=task)
        self.on_event("done", {"id": task.public_id, "result": result})
        return result

    def _room(self, task: Any, context: list[int], rec: "_Response") -> int:
        room = self.engine.max_tokens_per_seq - len(context)
        if task.max_total_tokens:
            room = min(room, task.max_total_tokens - len(rec.ids))
        return room


@dataclass
class _Response:
    """A task trajectory's response as training reads it."""

    ids: list[int] = field(default_factory=list)
    mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    text: str = ""
    turn_text: str = ""

    def sampled(self, out: TurnOutput, text: str) -> None:
        self.ids += out.tokens
        self.mask += [1] * len(out.tokens)
        lps = out.logprobs[:len(out.tokens)]
        self.logprobs += lps + [0.0] * (len(out.tokens) - len(lps))
        self.text += text
        self.turn_text = text

    def inserted(self, tokens: list[int], text: str) -> None:
        self.ids += tokens
        self.mask += [0] * len(tokens)
        self.logprobs += [0.0] * len(tokens)
        self.text += text


def _public(traj: Trajectory) -> str:
    return traj.task.public_id if traj.task is not None else traj.id
