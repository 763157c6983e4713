"""The worker protocol's frames: each kind survives encode/parse, and a frame that is not one
(unknown kind, a field missing or of the wrong type, an unknown kill reason) is refused, so a
worker sending one is treated as dead (its slot restarts it) rather than half-read. The bad
frames are written here by the test: perfbox's own worker is their only real writer."""

from __future__ import annotations

import os

import pytest

from perfbox.sandbox import framing
from perfbox.sandbox.worker import WorkerDied, WorkerProcess
from perfbox.sandbox.worker_protocol import (CancelFrame, DoneFrame, HeartbeatFrame, KillReason,
                                             LogFrame, ReadyFrame, StartedFrame, encode, parse)
from tests.conftest import job_frame

FRAMES = [job_frame("j1"), CancelFrame("j1"), ReadyFrame(["torch"], 1200), StartedFrame("j1"),
          LogFrame("j1", "stdout", "hello"), HeartbeatFrame("j1"),
          DoneFrame("j1", {"status": "OK", "summary": "", "report": {}, "error": ""}, "", 0, 0,
                    KillReason.NONE, 12, 10, "out", "", 3, 0),
          DoneFrame.cancelled_before_start("j2")]


@pytest.mark.parametrize("frame", FRAMES, ids=lambda f: f.KIND)
def test_every_frame_survives_the_wire(frame: object) -> None:
    wire = framing.FrameReader().feed(framing.encode(encode(frame)))  # type: ignore[arg-type]
    assert parse(wire[0]) == frame


@pytest.mark.parametrize("message, why", [
    ({"type": "forged", "job_id": "j1"}, "unknown type"),
    ({"job_id": "j1"}, "unknown type"),
    ({"type": "cancel"}, "without 'job_id'"),
    ({"type": "cancel", "job_id": 7}, "'job_id' is a int"),
    ({"type": "ready", "preloaded": [], "import_ms": True}, "'import_ms' is a bool"),
    ({**encode(DoneFrame.cancelled_before_start("j1")), "killed": "bored"}, "'killed'"),
    ({**encode(job_frame("j1")), "files": [{"name": "k.py"}]}, "'files' is malformed"),
    ({**encode(job_frame("j1")), "limits": [1, 2]}, "'limits' is a list"),
])
def test_a_malformed_frame_is_refused(message: dict, why: str) -> None:
    with pytest.raises(framing.FrameError, match=why):
        parse(message)


def test_a_worker_sending_a_malformed_frame_is_dead() -> None:
    worker = WorkerProcess(0, isolate=False, layout=None, cgroup=None, preload=[])
    read_fd, write_fd = os.pipe()
    worker._fd_in = lambda: read_fd  # type: ignore[method-assign]
    try:
        os.write(write_fd, framing.encode({"type": "done", "job_id": "j1"}))
        with pytest.raises(WorkerDied, match="bad frame.*without"):
            worker.read_frame(timeout_s=5)
        os.write(write_fd, framing.encode(encode(ReadyFrame([], 5))))
        assert worker.read_frame(timeout_s=5) == ReadyFrame([], 5)  # read on from a fresh start
    finally:
        os.close(read_fd), os.close(write_fd)
