"""BatchStream: the window, the end of the stream, and an abandoned stream."""

from __future__ import annotations

import threading

from perfbox.api.v1 import tools_pb2 as pb
from perfbox.sandbox.batch import BatchStream
from perfbox.sandbox.limits import JobLimits
from perfbox.sandbox.scheduler import Job


def make_job() -> Job:
    return Job(payload={}, limits=JobLimits())


def consume(batch: BatchStream) -> tuple[threading.Thread, list[pb.ToolResult]]:
    seen: list[pb.ToolResult] = []
    thread = threading.Thread(target=lambda: seen.extend(batch.stream()), daemon=True)
    thread.start()
    return thread, seen


def test_stream_ends_after_the_last_answer() -> None:
    batch = BatchStream(window=2, cancel=lambda job: None)
    thread, seen = consume(batch)
    job = make_job()
    assert batch.reserve()
    batch.started(job)
    batch.done_reading()
    batch.answer(lambda: pb.ToolResult(request_id="a"), job, reserved=True)
    thread.join(timeout=5)
    assert not thread.is_alive() and [r.request_id for r in seen] == ["a"]


def test_window_blocks_until_an_answer_frees_a_slot() -> None:
    batch = BatchStream(window=1, cancel=lambda job: None)
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
    batch = BatchStream(window=4, cancel=cancelled.append)
    thread, _ = consume(batch)
    job = make_job()
    assert batch.reserve()
    batch.started(job)
    batch.close()  # the client went away while the job runs
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert cancelled == [job]
    assert batch.reserve() is False  # nothing more is read from a closed stream
