"""The driver's events (tokens, inserted text, tool calls and results) as the proto messages
both streams share: `Run`'s RolloutEvent and `RunTasks`' TaskEvent carry them in fields of the
same names."""

from __future__ import annotations

from typing import Any

from perfbox.api.v1 import rollout_pb2 as rpb


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
