"""The embedded engine never takes more threads than the cores idle at its start: llama.cpp's
per-layer barrier stalls on one descheduled thread."""

from __future__ import annotations

import os
import subprocess
import sys

from perfbox.inference.engines.llama_cpp import free_cores


def test_busy_cores_are_not_counted_as_free() -> None:
    allowed = len(os.sched_getaffinity(0))
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(allowed)]
    try:
        assert free_cores(window_s=0.5) == 1  # every core busy: the floor, never zero
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    assert 1 <= free_cores() <= allowed
