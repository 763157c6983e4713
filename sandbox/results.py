"""Turns a finished job into the ToolResult a client sees.

One table maps how a job ended (killed for which limit, died by which signal, or answered) to a
Status and the sentence the model is told. Building a result never raises: an outcome whose
report does not fit the tool's report message becomes that call's INTERNAL_ERROR (perfbox's
tool wrote it), never an error that ends a stream of other calls.
"""

from __future__ import annotations

import logging
import signal
from typing import Any

from google.protobuf import json_format

from perfbox.api.v1 import tools_pb2 as pb
from perfbox.sandbox.limits import MAX_RESULT_BYTES, MAX_STREAM_KEEP_BYTES
from perfbox.sandbox.scheduler import Job, JobRun
from perfbox.sandbox.worker_protocol import KillReason
from perfbox.tools.text import bound_text

log = logging.getLogger(__name__)
_KILLED = {
    KillReason.TIMEOUT: (pb.TIMEOUT, "wall-clock limit of {wall_s:g} s reached; the process "
                         "tree was killed"),
    KillReason.OUTPUT: (pb.OUTPUT_LIMIT, "stdout/stderr exceeded {output_bytes} bytes; the job "
                        "was killed"),
    KillReason.MEMORY: (pb.MEMORY_LIMIT, "memory limit of {memory_mib:g} MiB reached; the job "
                        "was killed"),
    KillReason.RESULT: (pb.OUTPUT_LIMIT, "the tool's result exceeded {result_mib:g} MiB; the "
                        "job was killed (ask for less: fewer archs, no artifact text)"),
    KillReason.CANCEL: (pb.CANCELLED, "cancelled"),
}


def _limit_words(job: Job) -> dict[str, Any]:
    return {
        "wall_s": job.limits.wall_time_ms / 1000,
        "cpu_s": job.limits.cpu_time_ms / 1000,
        "output_bytes": job.limits.max_output_bytes,
        "file_bytes": job.limits.max_file_bytes,
        "memory_mib": job.limits.memory_bytes / (1 << 20),
        "result_mib": MAX_RESULT_BYTES / (1 << 20),
    }


def classify(job: Job, run: JobRun) -> tuple[Any, str]:
    """(Status, one-line reason) for a job that did not answer for itself."""
    words = _limit_words(job)
    done = run.done
    if run.cancelled_before_start:
        return pb.CANCELLED, "cancelled before it started"
    if done is not None and done.killed in _KILLED:
        status, text = _KILLED[done.killed]
        return status, text.format(**words)
    if run.oom_killed:
        return pb.MEMORY_LIMIT, _KILLED[KillReason.MEMORY][1].format(**words)
    if done is None:
        if job.cancel_requested:
            return pb.CANCELLED, "cancelled"
        return pb.INTERNAL_ERROR, f"the sandbox worker failed: {run.worker_error or 'no answer'}"
    if done.outcome_error:
        return pb.INTERNAL_ERROR, f"the tool's answer was unusable: {done.outcome_error}"
    signum = done.signal
    if signum == signal.SIGXCPU or (signum == signal.SIGKILL
                                    and done.cpu_ms >= job.limits.cpu_time_ms):
        return pb.TIMEOUT, "CPU-time limit of {cpu_s:g} s reached; the job was killed".format(**words)
    if signum == signal.SIGXFSZ:
        return pb.OUTPUT_LIMIT, ("a file grew past {file_bytes} bytes; the job was killed"
                                 .format(**words))
    if signum:
        return pb.RUNTIME_ERROR, f"the job was killed by signal {signal.Signals(signum).name}"
    return pb.RUNTIME_ERROR, f"the job exited with code {done.exit_code} before answering"


def build_result(job: Job, tool: str, identity: pb.Identity) -> pb.ToolResult:
    run = job.run
    assert run is not None
    done = run.done
    result = pb.ToolResult(request_id=job.request_id, job_id=job.job_id, tool=tool)
    # the memory cgroup's OOM killer fired: whatever the tool made of a process it lost, the
    # job hit its memory limit
    if done is not None and done.outcome and not done.killed and not run.oom_killed:
        _fill_from_outcome(result, done.outcome, tool)
    else:
        status, reason = classify(job, run)
        result.status = status
        result.error = reason
        result.summary = f"{pb.Status.Name(status)}: {reason}."
    if done is not None:
        result.stdout = bound_text(done.stdout, MAX_STREAM_KEEP_BYTES)
        result.stderr = bound_text(done.stderr, MAX_STREAM_KEEP_BYTES)
        result.timings.run_ms = _int(done.wall_ms)
        result.timings.cpu_ms = _int(done.cpu_ms)
    result.timings.queue_ms = run.queue_ms or 0
    result.identity.CopyFrom(identity)
    return result


def _fill_from_outcome(result: pb.ToolResult, outcome: dict[str, Any], tool: str) -> None:
    """The tool's own answer; one that does not fit the schema is this call's INTERNAL_ERROR."""
    try:
        result.status = pb.Status.Value(outcome["status"])
        result.summary = str(outcome.get("summary", ""))
        result.error = str(outcome.get("error", ""))
        report = outcome.get("report") or {}
        if report:
            json_format.ParseDict(report, getattr(result, tool), ignore_unknown_fields=True)
    except (KeyError, ValueError, TypeError, AttributeError, RecursionError,
            json_format.ParseError) as e:
        log.error("job %s: unusable outcome from tool %s: %s", result.job_id, tool, e)
        if tool in result.DESCRIPTOR.fields_by_name:
            result.ClearField(tool)
        result.status = pb.INTERNAL_ERROR
        result.error = f"the tool's answer did not match its report schema: {str(e)[:300]}"
        result.summary = f"INTERNAL_ERROR: {result.error}."


def _int(value: Any) -> int:
    return value if isinstance(value, int) and 0 <= value < 1 << 62 else 0


def failed_result(job: Job, tool: str, identity: pb.Identity, error: BaseException
                  ) -> pb.ToolResult:
    """The answer for a call whose result could not be built at all: the call fails with
    INTERNAL_ERROR (perfbox's fault), the stream it is part of goes on."""
    message = f"perfbox could not build this call's result: {type(error).__name__}: {error}"
    return pb.ToolResult(request_id=job.request_id, job_id=job.job_id, tool=tool,
                         status=pb.INTERNAL_ERROR, error=message[:500],
                         summary=f"INTERNAL_ERROR: {message[:500]}.", identity=identity)
