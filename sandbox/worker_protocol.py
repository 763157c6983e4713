"""The frames the server, a worker (the zygote) and a job's process exchange, as types.

On the wire each frame is one of framing's length-prefixed JSON objects whose "type" names its
kind:

    server -> worker        job, cancel
    worker -> job process   job (the same frame, passed on)
    worker -> server        ready, started, log, heartbeat, done
    job process -> worker   outcome (parsed apart: perfbox.sandbox.zygote checks it against the
                            tool outcome schema before relaying it)

`encode` turns a frame into that object; `parse` turns an object back into its frame and
refuses one of an unknown kind, with a field missing or of the wrong type (FrameError: the
reader has lost trust in the stream, and the slot restarts the worker, as framing says).
`KillReason` names why a worker killed a job; perfbox.sandbox.results maps each reason to the
status the caller sees.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import Any, ClassVar, Union

from perfbox.sandbox.framing import FrameError
from perfbox.sandbox.limits import JobLimits


class KillReason(str, enum.Enum):
    """Why the worker killed a job's process tree (NONE: it was not killed)."""

    NONE = ""
    TIMEOUT = "timeout"  # its wall-clock limit
    OUTPUT = "output"  # stdout and stderr past max_output_bytes
    MEMORY = "memory"  # the worker's memory watchdog (no cgroup)
    RESULT = "result"  # its result frame past MAX_RESULT_BYTES
    CANCEL = "cancel"  # its caller cancelled, or the server went away


@dataclass(frozen=True)
class SourceFile:
    name: str  # relative path in the job's workspace (validated by the service)
    content: str


@dataclass(frozen=True)
class JobFrame:
    """One tool call to run (server -> worker -> the job's process)."""

    KIND: ClassVar[str] = "job"
    job_id: str
    tool: str  # a registry name (perfbox.tools.TOOLS)
    language: str  # "cuda", "triton", "kernelbench"
    files: tuple[SourceFile, ...]
    options: dict[str, Any]  # proto-JSON of the tool's options, normalized by the tool
    limits: JobLimits
    memory_watchdog: bool = False  # no cgroup bounds the job: the worker watches its memory


@dataclass(frozen=True)
class CancelFrame:
    """Stop a job (server -> worker); it may overtake its job on the way."""

    KIND: ClassVar[str] = "cancel"
    job_id: str


@dataclass(frozen=True)
class ReadyFrame:
    """The worker's imports are done (worker -> server, once)."""

    KIND: ClassVar[str] = "ready"
    preloaded: list[str]  # the modules it imported up front
    import_ms: int  # how long they took


@dataclass(frozen=True)
class StartedFrame:
    KIND: ClassVar[str] = "started"
    job_id: str


@dataclass(frozen=True)
class LogFrame:
    """Output of a running job, relayed as it comes (bounded per job)."""

    KIND: ClassVar[str] = "log"
    job_id: str
    stream: str  # "stdout" or "stderr"
    text: str


@dataclass(frozen=True)
class HeartbeatFrame:
    """The worker is alive (every HEARTBEAT_PERIOD_S while a job runs)."""

    KIND: ClassVar[str] = "heartbeat"
    job_id: str


@dataclass(frozen=True)
class DoneFrame:
    """How a job ended (worker -> server)."""

    KIND: ClassVar[str] = "done"
    job_id: str
    outcome: dict[str, Any] | None  # the tool's checked outcome; None when it gave none
    outcome_error: str  # why the job's result frame was unusable ("" when it was not)
    exit_code: int  # of the job's process; negative: the signal that ended it
    signal: int  # the signal that ended it, 0 if none
    killed: KillReason
    wall_ms: int
    cpu_ms: int
    stdout: str  # head and tail kept
    stderr: str
    stdout_bytes: int  # everything the job wrote, kept or not
    stderr_bytes: int

    @classmethod
    def cancelled_before_start(cls, job_id: str) -> "DoneFrame":
        return cls(job_id, None, "", 0, 0, KillReason.CANCEL, 0, 0, "", "", 0, 0)


# the one frame a job's process writes on its result pipe: {"type": OUTCOME_KIND, "outcome": {...}}
OUTCOME_KIND = "outcome"

Frame = Union[JobFrame, CancelFrame, ReadyFrame, StartedFrame, LogFrame, HeartbeatFrame,
              DoneFrame]
_KINDS: dict[str, type] = {c.KIND: c for c in (JobFrame, CancelFrame, ReadyFrame, StartedFrame,
                                               LogFrame, HeartbeatFrame, DoneFrame)}
# the JSON type each annotation takes on the wire
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,), "int": (int,), "bool": (bool,), "list[str]": (list,),
    "dict[str, Any]": (dict,), "dict[str, Any] | None": (dict, type(None)),
    "KillReason": (str,), "JobLimits": (dict,), "tuple[SourceFile, ...]": (list,),
}


def encode(frame: Frame) -> dict[str, Any]:
    """The frame as framing's JSON object."""
    message: dict[str, Any] = {"type": frame.KIND}
    for field in dataclasses.fields(frame):
        value = getattr(frame, field.name)
        if isinstance(value, KillReason):
            value = value.value
        elif isinstance(value, JobLimits):
            value = value.to_json()
        elif field.name == "files":
            value = [{"name": f.name, "content": f.content} for f in value]
        message[field.name] = value
    return message


def parse(message: dict[str, Any]) -> Frame:
    """The frame a JSON object carries; FrameError when it is not a well-formed frame."""
    kind = _KINDS.get(str(message.get("type")))
    if kind is None:
        raise FrameError(f"a frame of unknown type {message.get('type')!r}")
    values: dict[str, Any] = {}
    for field in dataclasses.fields(kind):
        if field.name not in message:
            if field.default is not dataclasses.MISSING:
                continue
            raise FrameError(f"a {kind.KIND} frame without {field.name!r}")
        value = message[field.name]
        expected = _JSON_TYPES[str(field.type)]
        if not isinstance(value, expected) or (isinstance(value, bool) and bool not in expected):
            raise FrameError(f"a {kind.KIND} frame's {field.name!r} is a "
                             f"{type(value).__name__}")
        values[field.name] = _typed(field.name, str(field.type), value, kind.KIND)
    return kind(**values)


def _typed(name: str, annotation: str, value: Any, kind: str) -> Any:
    """A wire value as its field's type."""
    try:
        if annotation == "KillReason":
            return KillReason(value)
        if annotation == "JobLimits":
            return JobLimits.from_json(value)
        if annotation == "tuple[SourceFile, ...]":
            return tuple(SourceFile(str(f["name"]), str(f["content"])) for f in value)
    except (ValueError, TypeError, KeyError) as e:
        raise FrameError(f"a {kind} frame's {name!r} is malformed: {e}") from e
    return value
