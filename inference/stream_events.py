"""The driver's events (tokens, inserted text, tool calls and results) as the proto messages
both streams share: `Run`'s RolloutEvent and `RunTasks`' TaskEvent carry them in fields of the
same names."""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator
from typing import Any

from perfbox.api.v1 import rollout_pb2 as rpb

END = object()  # put on an event queue when the rollout has ended


def shared_field(kind: str, data: dict[str, Any]) -> dict[str, Any] | None:
    """{field name: message} for an event both streams carry, else None."""
    if kind == "token":
        return {"tokens": rpb.TokensEvent(token_ids=[data["token"]], text=data["text"])}
    if kind == "tokens":  # a streamed delta of several tokens (vLLM)
        return {"tokens": rpb.TokensEvent(token_ids=data["tokens"], text=data["text"])}
    if kind == "inserted":  # written by the worker, not sampled
        return {"tokens": rpb.TokensEvent(token_ids=data["tokens"], text=data["text"],
                                          inserted=True)}
    if kind == "tool_call":
        return {"tool_call": rpb.ToolEvent(tool=data["tool"],
                                           speculative_hit=bool(data.get("speculative_hit")))}
    if kind == "tool_result":
        return {"tool_result": rpb.ToolEvent(tool=data["tool"], status=data["status"])}
    return None


def summary(stats: Any) -> rpb.RolloutSummary:
    """A rollout's RolloutStats as the stream's last event carries them."""
    return rpb.RolloutSummary(
        mode=stats.mode, wall_s=stats.wall_s, tokens_per_s=stats.tokens_per_s,
        prefill_tokens=stats.prefill_tokens, reprefill_tokens=stats.reprefill_tokens,
        idle_s=stats.idle_s, spec_hits=stats.spec_hits, spec_misses=stats.spec_misses,
        wasted_tool_s=stats.wasted_tool_s, forked_tokens=stats.forked_tokens)


def drain(events: "queue.Queue[Any]", convert: Callable[[str, dict[str, Any]], Any]
          ) -> Iterator[Any]:
    """The converted events of a queue of (kind, data) until END."""
    while True:
        item = events.get()
        if item is END:
            return
        event = convert(*item)
        if event is not None:
            yield event
