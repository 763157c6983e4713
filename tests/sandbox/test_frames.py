"""What crosses the worker's pipes is checked before it is used: frames bounded in size and
depth, outcomes against their schema, and a result that cannot be built fails only its call.

The bad frames here are written by the test: with the submission's code kept away from the
result pipe, perfbox's own code is the only writer, so a malformed frame is a fault injected to
show what the reader does with one.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import struct

import pytest

from perfbox.api.v1 import tools_pb2 as pb
from perfbox.sandbox import framing
from perfbox.sandbox.job_process import job_caused
from perfbox.sandbox.limits import JobLimits
from perfbox.sandbox.results import build_result
from perfbox.sandbox.scheduler import Job, JobRun
from perfbox.sandbox.worker import WorkerDied, WorkerProcess
from perfbox.sandbox.worker_protocol import DoneFrame, KillReason
from perfbox.sandbox.zygote import _parse_outcome
from perfbox.tools.types import OutcomeError, ToolOutcome
from tests.conftest import job_frame


def raw_frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def test_a_deeply_nested_frame_is_a_frame_error_not_a_crash() -> None:
    body = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(framing.FrameError, match="deeper"):
        framing.FrameReader().feed(raw_frame(body))


def test_oversized_and_non_object_frames_are_refused() -> None:
    with pytest.raises(framing.FrameError, match="exceeds"):
        framing.FrameReader(max_bytes=10).feed(raw_frame(b'{"a": "0123456789"}'))
    with pytest.raises(framing.FrameError, match="not an object"):
        framing.FrameReader().feed(raw_frame(b"[1, 2]"))
    with pytest.raises(framing.FrameError, match="not JSON"):
        framing.FrameReader().feed(raw_frame(b"\xff\xfe"))


def test_nesting_inside_strings_does_not_count() -> None:
    text = "[" * 1000
    assert framing.FrameReader().feed(framing.encode({"text": text})) == [{"text": text}]


@pytest.mark.parametrize("outcome, why", [
    ({"status": "TOTALLY_OK", "summary": ""}, "not a Status name"),
    ({"status": "STATUS_UNSPECIFIED"}, "not a Status name"),
    ({"status": "OK", "summary": 3}, "summary is not a string"),
    ({"status": "OK", "report": [1]}, "report is not an object"),
    ({"status": "OK", "extra": 1}, "unknown outcome fields"),
    ("OK", "an outcome is an object"),
])
def test_outcomes_off_the_schema_are_refused(outcome: object, why: str) -> None:
    with pytest.raises(OutcomeError, match=why):
        ToolOutcome.parse(outcome)


def test_the_worker_relays_only_one_schema_checked_outcome() -> None:
    good = {"type": "outcome", "outcome": {"status": "OK", "summary": "fine", "report": {},
                                           "error": ""}}
    assert _parse_outcome([framing.encode(good)]) == (good["outcome"], "")
    forged = {"type": "outcome", "outcome": {"status": "FORGED"}}
    outcome, error = _parse_outcome([framing.encode(forged)])
    assert outcome is None and "schema" in error
    outcome, error = _parse_outcome([framing.encode(good), framing.encode(good)])
    assert outcome is None and "2 frame(s)" in error
    assert _parse_outcome([]) == (None, "")


def finished_job(**done: object) -> Job:
    """A compile job that ended as `done` says (DoneFrame fields; the rest: a clean exit)."""
    job = Job(payload=job_frame(), limits=JobLimits(), request_id="r1")
    clean = dataclasses.replace(DoneFrame.cancelled_before_start(job.job_id),
                                killed=KillReason.NONE)
    job.run = JobRun(dataclasses.replace(clean, **done))
    return job


def test_an_outcome_error_is_perfboxs_internal_error_naming_why() -> None:
    job = finished_job(outcome_error="expected one outcome frame")
    result = build_result(job, "compile", pb.Identity())
    assert result.status == pb.INTERNAL_ERROR and "expected one outcome frame" in result.error


def test_a_report_off_the_proto_schema_fails_only_that_result() -> None:
    job = finished_job(outcome={"status": "OK", "summary": "", "error": "",
                                "report": {"kernels": "not a list"}})
    result = build_result(job, "compile", pb.Identity())
    assert result.status == pb.INTERNAL_ERROR and "report schema" in result.error
    assert result.request_id == "r1"


def test_the_results_kill_reason_is_an_output_limit() -> None:
    job = finished_job(killed=KillReason.RESULT, exit_code=-9, signal=9)
    result = build_result(job, "compile", pb.Identity())
    assert result.status == pb.OUTPUT_LIMIT and "result exceeded" in result.error


def test_a_bad_frame_from_a_worker_is_its_death_and_resets_the_reader() -> None:
    worker = WorkerProcess(0, isolate=False, layout=None, cgroup=None, preload=[])
    read_fd, write_fd = os.pipe()
    worker._fd_in = lambda: read_fd  # type: ignore[method-assign]
    try:
        os.write(write_fd, raw_frame(b"{not json"))
        with pytest.raises(WorkerDied, match="bad frame"):
            worker._read(timeout_s=5)
        os.write(write_fd, framing.encode({"type": "ready"}))
        assert worker._read(timeout_s=5) == {"type": "ready"}  # a fresh reader
    finally:
        os.close(read_fd), os.close(write_fd)


@pytest.mark.parametrize("error, status", [
    (OSError(errno.ENOSPC, "No space left on device"), "OUTPUT_LIMIT"),
    (BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable"), "RUNTIME_ERROR"),
    (RuntimeError("can't start new thread"), "RUNTIME_ERROR"),
    (MemoryError(), "MEMORY_LIMIT"),
])
def test_failures_the_job_caused_get_the_jobs_status(error: BaseException, status: str) -> None:
    outcome = job_caused(error)
    assert outcome is not None and outcome["status"] == status
    assert json.dumps(outcome)  # plain data for the result pipe


def test_perfboxs_own_faults_are_not_blamed_on_the_job() -> None:
    assert job_caused(KeyError("tool")) is None
    assert job_caused(OSError(errno.EACCES, "Permission denied")) is None
