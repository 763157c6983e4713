"""Attacks a red team (a helper given only the README and the interface) found against the
first version of the harness, kept as tests with the status each must now get."""

from __future__ import annotations

from pathlib import Path

from perfbox.tools.types import Status
from tests.security.problems import honest, model_new, run, variant

# 1. compute straight into the tool's shared output slot, found through the input's storage:
# the side loop's copy became a no-op, so an identical kernel looked 1.8x faster
INTO_THE_SLOT = """
st = x.untyped_storage()
nb = x.numel() * x.element_size()
if st.nbytes() >= x.storage_offset() * x.element_size() + 2 * nb:
    off = x.storage_offset() + ((nb + 63) // 64 * 64) // x.element_size()
    out = torch.empty(0, dtype=x.dtype).set_(st, off, x.shape)
    torch.clamp(x, min=0, out=out)
    return out
return torch.relu(x)
"""

# 2. a double-forked helper re-parented to the tool was claimed by both sides' trees, so each
# thaw of the reference woke it, and it spun while the reference was timed
ORPHAN = """
import os, time
def _helper(root):
    while True:
        if not os.path.exists("/proc/%d" % root):
            os._exit(0)
        t = time.perf_counter() + 0.0005
        while time.perf_counter() < t:
            pass
"""
ORPHAN_INIT = """
root = os.getpid()
if os.fork() == 0:
    if os.fork() == 0:
        _helper(root)
    os._exit(0)
os.wait()
"""

# 3. a child stuck in vfork cannot be stopped: the tool raised instead of answering
VFORK = """
import ctypes, os
_libc = ctypes.CDLL(None)
"""
VFORK_INIT = """
if os.fork() == 0:
    if _libc.vfork() == 0:
        while True:
            _libc.sleep(1000)
    os._exit(0)
"""

# 4. a meta tensor sent as an output (the submission's copy of wire.plain replaced): the
# tool's comparison raised
META = """
from perfbox.tools.harness import wire as _w
vars(_w)["plain"] = lambda v: v
"""

# 5. wrong on every other call: only the first of check's two runs per input set was judged
EVERY_OTHER = ("self.calls = getattr(self, 'calls', 0) + 1\n"
               "return torch.zeros_like(x) if self.calls % 2 == 0 else torch.relu(x)")


def test_computing_into_the_shared_memory_gains_nothing(tmp_path: Path) -> None:
    out = run(tmp_path, "bench", "relu.py", honest("relu.py", forward=INTO_THE_SLOT))
    assert out.status != Status.OK or out.report["speedup"] < 1.3, out.summary


def test_an_orphan_never_runs_while_the_reference_is_timed(tmp_path: Path) -> None:
    out = run(tmp_path, "bench", "relu.py", honest("relu.py", ORPHAN, init_body=ORPHAN_INIT))
    assert out.status == Status.OK, out.summary
    # the spinner runs only in the submission's own windows: it can only slow the submission,
    # and the round trip (timed on the reference) stays that of an idle side
    assert out.report["speedup"] < 1.3 and out.report["round_trip_us"] < 2000, out.summary


def test_a_process_stuck_in_vfork_is_the_submissions_runtime_error(tmp_path: Path) -> None:
    out = run(tmp_path, "bench", "relu.py", honest("relu.py", VFORK, init_body=VFORK_INIT))
    assert out.status == Status.RUNTIME_ERROR and "frozen" in out.error, out.summary


def test_a_meta_tensor_output_is_wrong_not_a_crash(tmp_path: Path) -> None:
    source = honest("relu.py", META, forward='return torch.empty(x.shape, device="meta")')
    out = run(tmp_path, "check", "relu.py", source)
    assert out.status == Status.WRONG_ANSWER and "not a plain tensor" in out.error, out.summary


def test_wrong_on_every_other_call_is_wrong(tmp_path: Path) -> None:
    out = run(tmp_path, "check", "relu.py", honest("relu.py", forward=EVERY_OTHER))
    assert out.status == Status.WRONG_ANSWER and "second run" in out.error, out.summary


def test_a_child_cannot_wake_the_frozen_root(tmp_path: Path) -> None:
    init = ("import os, signal\npid = os.fork()\nif pid == 0:\n"
            "    try:\n        os.kill(os.getppid(), signal.SIGCONT)\n        os._exit(1)\n"
            "    except PermissionError:\n        os._exit(0)\n"
            "_, status = os.waitpid(pid, 0)\n"
            "if os.waitstatus_to_exitcode(status) != 0:\n"
            "    raise RuntimeError('ESCAPED: a child sent SIGCONT')")
    out = run(tmp_path, "check", "relu.py", model_new("", "return torch.relu(x)",
                                                      init_body=init), num_input_sets=1)
    assert out.status == Status.OK, out.summary


def test_returning_the_input_buffer_is_wrong(tmp_path: Path) -> None:
    # relu_ on torch.rand's non-negative inputs writes nothing and returns its input: it
    # skipped the output's allocation and looked 4x faster than an identical kernel
    out = run(tmp_path, "bench", "relu.py", honest("relu.py", forward="return torch.relu_(x)"))
    assert out.status == Status.WRONG_ANSWER and "input buffer" in out.error, out.summary


def test_writing_into_the_input_is_wrong(tmp_path: Path) -> None:
    forward = "y = torch.relu(x)\nx.mul_(0.5)\nreturn y"
    out = run(tmp_path, "bench", "relu.py", honest("relu.py", forward=forward))
    assert out.status == Status.WRONG_ANSWER and "in place" in out.error, out.summary


def test_a_view_is_allowed_where_the_reference_returns_one(tmp_path: Path) -> None:
    reference = variant("relu.py", "return torch.relu(x)", "return x.view(-1)")
    out = run(tmp_path, "bench", reference, model_new("", "return x.reshape(-1)"))
    assert out.status == Status.OK, out.summary


# 6. (round 2) a helper armed a POSIX timer sending SIGCONT, woke while frozen and spun through
# the reference's windows (2.4x). timer_create, mq_notify, clone's and prctl's SIGCONT are now
# refused (test_neighbour_attacks); and whatever wakes a frozen submission, the kernel's CPU
# accounting shows it ran. A kernel-sent SIGCONT the filter does not know cannot be produced on
# demand, so this test injects one: after every reference window the tool's own SIGCONT wakes
# the submission for 5 ms (a fault injection standing in for the kernel).
WAKE_INJECTION = """
import json, os, signal, sys, pathlib, time
from perfbox import tools
from perfbox.tools.harness import cpu_sampling
from perfbox.tools.types import ToolRequest
real = cpu_sampling.Bench.window
def window(self, name, calls):
    result = real(self, name, calls)
    if name == "reference":
        root = self.sides["submission"].pid
        os.kill(root, signal.SIGCONT)
        time.sleep(0.005)
        os.kill(root, signal.SIGSTOP)
        time.sleep(0.005)
    return result
cpu_sampling.Bench.window = window
workdir = pathlib.Path(sys.argv[1])
out = tools.run(ToolRequest("bench", "kernelbench", ["new.py", "reference.py"], workdir,
                            {"time_budget_s": 1.0}))
print("OUTCOME" + json.dumps(out.to_json()))
"""

SPINNING_THREAD = """
import threading
def _spin():
    while True:
        pass
threading.Thread(target=_spin, daemon=True).start()
"""


def test_a_submission_that_runs_while_frozen_voids_the_bench(tmp_path: Path) -> None:
    import json
    import shutil
    import subprocess
    import sys

    from tests.security.problems import LEVEL1

    shutil.copy(LEVEL1 / "relu.py", tmp_path / "reference.py")
    (tmp_path / "new.py").write_text(honest("relu.py", SPINNING_THREAD))
    proc = subprocess.run([sys.executable, "-c", WAKE_INJECTION, str(tmp_path)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("OUTCOME")), None)
    assert line is not None, proc.stderr[-2000:]
    outcome = json.loads(line[len("OUTCOME"):])
    assert outcome["status"] == "RUNTIME_ERROR" and "while frozen" in outcome["error"], outcome


def test_an_output_buffer_kept_across_calls_is_flagged(tmp_path: Path) -> None:
    # (round 2) both sides get large buffers on fresh pages each call; keeping one output
    # buffer saved the page faults and looked 1.6x faster with honest compute
    forward = ("if getattr(self, 'buf', None) is None:\n    self.buf = torch.empty_like(x)\n"
               "return torch.clamp_min(x, 0.0, out=self.buf)")
    out = run(tmp_path, "bench", "relu.py", honest("relu.py", forward=forward))
    assert out.status == Status.OK and "output_reused" in out.report["measurement_flags"], \
        out.summary
    assert out.report["submission_page_faults"] < out.report["reference_page_faults"]
