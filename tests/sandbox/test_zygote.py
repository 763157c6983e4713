"""The warm worker's protocol, driven directly over its pipes (process backend: no sandbox
needed, the protocol is the same)."""

from __future__ import annotations

import os
import time

from perfbox.sandbox import framing
from perfbox.sandbox.worker import WorkerProcess
from perfbox.sandbox.worker_protocol import CancelFrame, KillReason, encode
from tests.conftest import TRITON_KERNEL, job_frame

SPIN = TRITON_KERNEL + "\nwhile True:\n    pass\n"


def test_cancel_arriving_in_the_same_read_as_its_job() -> None:
    worker = WorkerProcess(0, isolate=False, layout=None, cgroup=None, preload=[])
    worker.start()
    try:
        assert worker.proc is not None and worker.proc.stdin is not None
        # both frames in one write: the worker reads them together
        data = framing.encode(encode(job_frame("j1", SPIN))) + framing.encode(
            encode(CancelFrame("j1")))
        os.write(worker.proc.stdin.fileno(), data)
        started = time.monotonic()
        while True:
            message = worker._read(timeout_s=20)
            if message.get("type") == "done":
                break
        assert message["killed"] == "cancel"
        assert time.monotonic() - started < 10
    finally:
        worker.kill()


def test_cancel_before_its_job_and_during_it() -> None:
    worker = WorkerProcess(0, isolate=False, layout=None, cgroup=None, preload=[])
    worker.start()
    try:
        worker.send(CancelFrame("early"))
        done = worker.run(job_frame("early", SPIN), lambda e: None)
        assert done.killed == KillReason.CANCEL

        import threading

        timer = threading.Timer(1.0, worker.cancel, args=("late",))
        timer.start()
        started = time.monotonic()
        done = worker.run(job_frame("late", SPIN), lambda e: None)
        assert done.killed == KillReason.CANCEL and 0.9 < time.monotonic() - started < 10

        done = worker.run(job_frame("ok", TRITON_KERNEL), lambda e: None)
        assert done.outcome is not None and done.outcome["status"] == "OK"
        assert done.killed == KillReason.NONE
    finally:
        worker.kill()
