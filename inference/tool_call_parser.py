"""Tool calls in the model's token stream: a streaming parser and canonical cache keys.

The default syntax is Hermes/Qwen's `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`;
the tags are configurable (`ToolCallFormat`). The parser is fed decoded text as it streams and
reports two moments per call: `arguments_complete` (the JSON object has closed, so the call can
be launched before the model even writes the end tag: early launch) and `closed` (the end tag).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ToolCallFormat:
    """How calls are delimited in the stream."""

    start_tag: str = "<tool_call>"
    end_tag: str = "</tool_call>"


# Tool-call parsers by name, as RL frameworks and vLLM name them (`--tool-call-parser`).
PARSERS: dict[str, ToolCallFormat] = {
    "hermes": ToolCallFormat("<tool_call>", "</tool_call>"),  # Hermes, Qwen2.5/3, SmolLM3
}


@dataclass
class ToolCall:
    """One call as the model wrote it."""

    name: str
    arguments: dict[str, Any]
    raw: str  # the JSON text between the tags

    @property
    def key(self) -> str:
        return canonical_key(self.name, self.arguments)


@dataclass
class ParseEvent:
    """What feeding a chunk revealed."""

    arguments_complete: list[ToolCall] = field(default_factory=list)  # launchable now
    closed: list[ToolCall] = field(default_factory=list)  # end tag seen
    malformed: list[str] = field(default_factory=list)  # call bodies that are not valid calls


def _normalise(value: Any) -> Any:
    """Numbers compare by value (1 == 1.0), dict keys are sorted by json.dumps."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        if isinstance(value, float) and math.isfinite(value) and value == int(value):
            return int(value)
        return value
    if isinstance(value, dict):
        return {str(k): _normalise(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    return str(value)


def canonical_key(name: str, arguments: dict[str, Any]) -> str:
    """The cache key of a call: tool name and arguments as sorted, normalised JSON."""
    return json.dumps({"name": name, "arguments": _normalise(arguments)}, sort_keys=True,
                      separators=(",", ":"), ensure_ascii=False)


MAX_CALL_CHARS = 1 << 20  # a call body longer than this is malformed, not parsed
MAX_CALL_DEPTH = 32  # nesting of the call's JSON (the schemas are flat)
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _json(text: str) -> Any:
    """The JSON value of text, or _BAD. Bounded first: the model writes this text, and a
    deeply nested or huge body must not raise out of the driver (RecursionError, the int
    digit limit's ValueError) or take its time."""
    if len(text) > MAX_CALL_CHARS or _depth(text) > MAX_CALL_DEPTH:
        return _BAD
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return _BAD


def _depth(text: str) -> int:
    """Bracket nesting outside strings (an upper bound is all that is needed)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            escaped, in_string = (False, True) if escaped else (ch == "\\", ch != '"')
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


_BAD = object()


def parse_arguments(text: str) -> dict[str, Any] | None:
    """A call's arguments given as JSON text (bounded like parse_call), or None."""
    data = _json(text)
    return data if isinstance(data, dict) else None


def call_bodies(text: str, fmt: ToolCallFormat = PARSERS["hermes"]) -> list[str]:
    """The text between each start tag and the next end tag, in order, in one linear pass
    (a lazy regex rescans to the end for every unclosed start tag: quadratic in what a model
    can write)."""
    out: list[str] = []
    at = 0
    while (start := text.find(fmt.start_tag, at)) >= 0:
        end = text.find(fmt.end_tag, start + len(fmt.start_tag))
        if end < 0:
            break  # no later start tag has an end either
        out.append(text[start + len(fmt.start_tag):end])
        at = end + len(fmt.end_tag)
    return out


def parse_call(body: str) -> ToolCall | None:
    data = _json(body)
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return None
    if not _NAME.fullmatch(data["name"]):  # names go into logs and messages as they are
        return None
    arguments = data.get("arguments", {})
    if isinstance(arguments, str):  # some models emit arguments as a JSON string
        arguments = _json(arguments)
    if not isinstance(arguments, dict):
        return None
    return ToolCall(data["name"], arguments, body.strip())


def _json_object_end(text: str) -> int | None:
    """Index just past the first complete top-level JSON object in text, or None."""
    depth, in_string, escaped, started = 0, False, False, False
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == "{":
            depth += 1
            started = True
        elif ch == "}":
            depth -= 1
            if started and depth == 0:
                return i + 1
    return None


class ToolCallParser:
    """Streaming: feed() decoded text pieces in order; calls come out as they complete."""

    def __init__(self, fmt: ToolCallFormat | None = None) -> None:
        self.fmt = fmt or ToolCallFormat()
        self._buffer = ""
        self._in_call = False
        self._announced = False  # arguments_complete already reported for the open call
        self.text = ""  # everything fed so far

    def feed(self, piece: str) -> ParseEvent:
        self.text += piece
        self._buffer += piece
        event = ParseEvent()
        while True:
            if not self._in_call:
                at = self._buffer.find(self.fmt.start_tag)
                if at < 0:
                    # keep a tail that may be the start of a split tag
                    self._buffer = self._buffer[-len(self.fmt.start_tag):]
                    return event
                self._buffer = self._buffer[at + len(self.fmt.start_tag):]
                self._in_call, self._announced = True, False
            end = self._buffer.find(self.fmt.end_tag)
            body = self._buffer if end < 0 else self._buffer[:end]
            if not self._announced:
                stop = _json_object_end(body)
                if stop is not None:
                    call = parse_call(body[:stop])
                    if call is not None:
                        event.arguments_complete.append(call)
                    self._announced = True
            if end < 0:
                return event
            call = parse_call(body)
            if call is None:
                event.malformed.append(body.strip())
            else:
                event.closed.append(call)
            self._buffer = self._buffer[end + len(self.fmt.end_tag):]
            self._in_call = False
