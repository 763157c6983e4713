"""Plain data that crosses the sandbox boundary: what a tool is asked and what it answers.

Tools never import protobuf or the sandbox; reports are dicts in the proto-JSON mapping of the
tool's report message (`CompileReport`, `DisasmReport`), so the server turns them into protos
with `json_format.ParseDict` and a tool stays runnable in-process, in tests, or in a worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any


class Status(IntEnum):
    """Mirror of `perfbox.v1.Status` (same names and numbers); ordered: > OK is a failure."""

    STATUS_UNSPECIFIED = 0
    OK = 1
    COMPILE_ERROR = 2
    WRONG_ANSWER = 3
    RUNTIME_ERROR = 4
    TIMEOUT = 5
    MEMORY_LIMIT = 6
    OUTPUT_LIMIT = 7
    REJECTED = 8
    CANCELLED = 9
    UNAVAILABLE_HERE = 10
    INTERNAL_ERROR = 11
    IMPLAUSIBLE = 12  # bench figures that cannot be physical: never a reward


class OutcomeError(ValueError):
    """An outcome that does not match the schema (unknown status, wrong field types)."""


class ToolInputError(ValueError):
    """The request cannot be run as given (bad option, unknown arch); the message says what to
    change. Raised before any work so the server can answer INVALID_ARGUMENT."""


@dataclass
class ToolRequest:
    """One tool call as a tool sees it."""

    tool: str  # registry name, e.g. "compile"
    language: str  # "cuda", "triton" or "kernelbench"
    files: list[str]  # workspace-relative names of the sources, in request order
    workdir: Path  # the job's workspace; sources are already written there
    options: dict[str, Any] = field(default_factory=dict)  # proto-JSON of the tool's options


@dataclass
class ToolOutcome:
    """What a tool answers."""

    status: Status
    summary: str  # short, model-facing: what happened and what to try next
    report: dict[str, Any] = field(default_factory=dict)  # proto-JSON of the tool's report
    error: str = ""  # one-line reason for a non-OK status

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status.name,
            "summary": self.summary,
            "report": self.report,
            "error": self.error,
        }

    @classmethod
    def parse(cls, data: Any) -> "ToolOutcome":
        """The outcome in `data` after checking it against the schema (a dict of exactly these
        fields and types, a known status), or OutcomeError saying what is wrong. Used where an
        outcome crosses a process boundary, so nothing malformed is acted upon."""
        if not isinstance(data, dict):
            raise OutcomeError(f"an outcome is an object, not {type(data).__name__}")
        unknown = set(data) - {"status", "summary", "report", "error"}
        if unknown:
            raise OutcomeError(f"unknown outcome fields: {', '.join(sorted(unknown))[:200]}")
        status = data.get("status")
        if not isinstance(status, str) or status not in Status.__members__ \
                or status == Status.STATUS_UNSPECIFIED.name:
            raise OutcomeError(f"status {str(status)[:40]!r} is not a Status name")
        for name in ("summary", "error"):
            if not isinstance(data.get(name, ""), str):
                raise OutcomeError(f"{name} is not a string")
        if not isinstance(data.get("report") or {}, dict):
            raise OutcomeError("report is not an object")
        return cls.from_json(data)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ToolOutcome":
        return cls(
            status=Status[data["status"]],
            summary=str(data.get("summary", "")),
            report=dict(data.get("report") or {}),
            error=str(data.get("error", "")),
        )
