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
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from perfbox.inference.engines.vllm_sessions import Session, TurnOutput, VllmSessions
from perfbox.inference.rollout import (CallRecord, Mode, RolloutConfig, RolloutStats,
                                       TrajectoryResult)
from perfbox.inference.tool_cache import ToolCache
from perfbox.inference.toolcall import ToolCall, ToolCallFormat, ToolCallParser
from perfbox.inference.tools_bridge import ToolOutput
from perfbox.inference.workload import ChatTemplate, Trajectory


@dataclass
class _Counts:
    prefill: int = 0
    reprefill: int = 0
    calls: list[CallRecord] = field(default_factory=list)
    turn_generation_s: list[float] = field(default_factory=list)


class SessionRollout:
    """Runs trajectories on a VllmSessions engine (call run() once, inside an event loop)."""

    def __init__(self, engine: VllmSessions, run_tool: Callable[[ToolCall], ToolOutput],
                 config: RolloutConfig, template: ChatTemplate | None = None,
                 call_format: ToolCallFormat | None = None,
                 on_event: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        self.engine, self.run_tool, self.config = engine, run_tool, config
        self.on_event = on_event or (lambda kind, data: None)
        self.template = template or ChatTemplate()
        self.call_format = call_format or ToolCallFormat()
        self.cache = ToolCache()
        self.end_of_turn = engine.token_id(self.template.end)
        self._pool = cf.ThreadPoolExecutor(config.tool_workers)

    async def run(self, trajectories: list[Trajectory]) -> RolloutStats:
        started = time.monotonic()
        try:
            results = await asyncio.gather(*(self._trajectory(t, started)
                                             for t in trajectories))
        finally:
            self.cache.cancel_unclaimed()
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

    async def _turn(self, session: Session | None, context: list[int], new: list[int],
                    params: Any, traj: Trajectory, counts: _Counts, held: int
                    ) -> tuple[TurnOutput, ToolCall | None, float]:
        out, parser, call = TurnOutput(), ToolCallParser(self.call_format), None
        turn_started = time.monotonic()
        turn_s = 0.0
        if session is None:  # resubmit: the whole conversation again
            stream = self.engine.request(list(context), params, out)
        else:
            stream = session.turn(list(new), params)
        async for delta in stream:
            before = self.engine.detokenize(out.tokens)
            out.tokens += delta
            piece = self.engine.detokenize(out.tokens)[len(before):]
            self.on_event("tokens", {"id": traj.id, "tokens": delta, "text": piece})
            event = parser.feed(piece)
            if self.config.mode == Mode.SPECULATE:
                for ready in event.arguments_complete:  # early launch
                    self._launch(ready, traj)
            if event.closed and call is None:
                call, turn_s = event.closed[0], time.monotonic() - turn_started
        if session is None:
            counts.prefill += len(context) - out.cached_tokens
            counts.reprefill += max(0, held - out.cached_tokens)
        else:
            counts.prefill += len(new)
        return out, call, turn_s or time.monotonic() - turn_started

    # -- tools -------------------------------------------------------------------------------

    def _launch(self, call: ToolCall, traj: Trajectory) -> None:
        self.cache.launch(call.key, lambda c=call: self.run_tool(c), self._pool.submit,
                          response_id=traj.id)

    async def _tool(self, call: ToolCall, traj: Trajectory, counts: _Counts) -> ToolOutput:
        closed_at = time.monotonic()
        future = self.cache.claim(call.key) if self.config.mode == Mode.SPECULATE else None
        hit = future is not None
        if future is None:
            future = self._pool.submit(self.run_tool, call)
        self.on_event("tool_call", {"id": traj.id, "tool": call.name, "speculative_hit": hit})
        if self.config.mode == Mode.SPECULATE and call.name == "compile":
            self._launch(ToolCall("disasm", dict(call.arguments), call.raw), traj)
        try:
            output = await asyncio.wrap_future(future)
        except Exception as e:  # the service failed: the model reads the error
            output = ToolOutput(f"TOOL_ERROR: {type(e).__name__}: {e}"[:600], "TOOL_ERROR", 0.0)
        counts.calls.append(CallRecord(call.name, output.status, output.tool_s,
                                       time.monotonic() - closed_at, hit))
        self.on_event("tool_result", {"id": traj.id, "tool": call.name,
                                      "status": output.status})
        return output
