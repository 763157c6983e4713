"""The measurement attacks on the GPU path (marked gpu: run by .ci/gpu-checks on a GPU node).

The GPU path times calls with CUDA events in the submission's process and reads a verified
output back through that process; the CPU path's design (the tool's clock around each call,
outputs read from the frozen process's memory) is not yet its design. An attack it is not
designed to stop is written here as an expected failure (not strict: whether the tool's clock
check happens to catch this forgery was not run on a GPU when it was written)."""

from __future__ import annotations

from pathlib import Path

import pytest

from perfbox.tools.types import Status
from tests.security.problems import honest, run
from tests.security.test_timing_loop_hacks import PATCH_LOOP

pytestmark = pytest.mark.gpu

GPU_LOOP = """
import perfbox.tools.harness.side_loop as _loop
_real = _loop._command
def _fake(conn, message, fn, device, timer, state):
    if message.startswith(b"timed:"):
        from perfbox.tools import gpu_timing
        return gpu_timing.pack_times([(0.5, 0.5)] * len(message[6:]))  # claim 0.5 us each
    if message == b"last":
        state["last"] = fn(*state["pool"][0])
    return _real(conn, message, fn, device, timer, state)
_loop._command = _fake
"""


def test_honest_kernel_is_ok_on_the_gpu(tmp_path: Path) -> None:
    out = run(tmp_path, "bench", "softmax.py", honest("softmax.py"), device="cuda")
    assert out.status == Status.OK, out.summary


def test_wrong_kernel_is_not_timed_on_the_gpu(tmp_path: Path) -> None:
    out = run(tmp_path, "bench", "softmax.py",
              honest("softmax.py", forward="return torch.zeros_like(x)"), device="cuda")
    assert out.status == Status.WRONG_ANSWER


def test_the_cpu_paths_loop_patch_is_harmless_on_the_gpu(tmp_path: Path) -> None:
    out = run(tmp_path, "bench", "softmax.py", honest("softmax.py", PATCH_LOOP), device="cuda")
    assert out.status == Status.OK and out.report["speedup"] < 1.5, out.summary


@pytest.mark.xfail(strict=False, reason="GPU path: event times and the verified output come "
                   "from the submission's process; a replaced loop forges both")
def test_forged_event_times_and_lazy_verified_output_are_caught(tmp_path: Path) -> None:
    out = run(tmp_path, "bench", "softmax.py", honest("softmax.py", GPU_LOOP), device="cuda")
    assert out.status != Status.OK or out.report["speedup"] < 1.5, out.summary
