"""BatchStream: the window, the end of the stream, and an abandoned stream."""

from __future__ import annotations

import threading

from perfbox.api.v1 import tools_pb2 as pb
from perfbox.sandbox.batch import BatchStream
from perfbox.sandbox.limits import JobLimits
from perfbox.sandbox.scheduler import Job
from tests.conftest import job_frame


def make_job() -> Job:
    return Job(payload=job_frame(), limits=JobLimits())


def failed(job: Job, error: BaseException) -> pb.ToolResult:
    return pb.ToolResult(request_id=job.request_id, status=pb.INTERNAL_ERROR, error=str(error))


def consume(batch: BatchStream) -> tuple[threading.Thread, list[pb.ToolResult]]:
    seen: list[pb.ToolResult] = []
    thread = threading.Thread(target=lambda: seen.extend(batch.stream()), daemon=True)
    thread.start()
    return thread, seen


def test_stream_ends_after_the_last_answer() -> None:
    batch = BatchStream(window=2, cancel=lambda job: None, on_build_error=failed)
    thread, seen = consume(batch)
    job = make_job()
    assert batch.reserve()
    batch.started(job)
    batch.done_reading()
    batch.answer(lambda: pb.ToolResult(request_id="a"), job, reserved=True)
    thread.join(timeout=5)
    assert not thread.is_alive() and [r.request_id for r in seen] == ["a"]


def test_window_blocks_until_an_answer_frees_a_slot() -> None:
    batch = BatchStream(window=1, cancel=lambda job: None, on_build_error=failed)
    assert batch.reserve()
    got = []
    waiter = threading.Thread(target=lambda: got.append(batch.reserve()), daemon=True)
    waiter.start()
    waiter.join(timeout=0.3)
    assert waiter.is_alive()  # the window is full
    batch.answer(pb.ToolResult(request_id="x"), reserved=True)
    waiter.join(timeout=5)
    assert got == [True]


def test_abandoned_stream_cancels_its_jobs_and_frees_its_thread() -> None:
    cancelled: list[Job] = []
    batch = BatchStream(window=4, cancel=cancelled.append, on_build_error=failed)
    thread, _ = consume(batch)
    job = make_job()
    assert batch.reserve()
    batch.started(job)
    batch.close()  # the client went away while the job runs
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert cancelled == [job]
    assert batch.reserve() is False  # nothing more is read from a closed stream


def test_a_result_that_cannot_be_built_fails_that_call_only() -> None:
    """One call's result raising while it is built (a fault injected here: perfbox's own
    result code has no input that raises on demand) answers that call INTERNAL_ERROR with its
    request id; the calls after it are answered and the stream ends normally."""
    batch = BatchStream(window=4, cancel=lambda job: None, on_build_error=failed)
    thread, seen = consume(batch)
    jobs = [Job(payload=job_frame(), limits=JobLimits(), request_id=name)
            for name in ("bad", "good")]

    def explode() -> pb.ToolResult:
        raise ValueError("forged status name")

    for job in jobs:
        assert batch.reserve()
        batch.started(job)
    batch.done_reading()
    batch.answer(explode, jobs[0], reserved=True)
    batch.answer(lambda: pb.ToolResult(request_id="good", status=pb.OK), jobs[1], reserved=True)
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert [(r.request_id, r.status) for r in seen] == [("bad", pb.INTERNAL_ERROR),
                                                        ("good", pb.OK)]
    assert "forged status name" in seen[0].error
