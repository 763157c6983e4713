"""The two sides of a measurement as processes the tool forks, commands and kills.

The submission's side is forked *first*, before the tool draws a seed or computes a reference
output, so nothing it could hunt for exists in its memory; it closes every descriptor but its
pipe, is confined (`confine`) and frozen (`proctree`) whenever the tool is not asking it for
something. The reference's side is forked from the trusted tool the same way and runs the same
loop (`side_loop`), so both pay the same per-call overhead. The tool is undumpable (no ptrace,
no /proc/pid/mem) and a child subreaper (no process of a side escapes the tree).

Everything a side says is data to be checked; a side is stopped by killing its whole tree.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Callable

from perfbox.tools.harness import confine, proctree, wire

SUBMISSION, REFERENCE = "submission", "reference"
CONFINED = b"confined"
PR_SET_DUMPABLE = 4


@dataclass
class Side:
    """One forked side: its root pid, the pipe to it, and its process tree."""

    name: str  # SUBMISSION or REFERENCE
    pid: int
    conn: Connection
    tree: proctree.Tree = field(init=False)  # its processes, seen from outside

    def __post_init__(self) -> None:
        self.tree = proctree.Tree(self.pid, claim_orphans=self.name == SUBMISSION)

    def set_others(self, others: tuple[int, ...]) -> None:
        """Root pids of the other sides: children of the tool that are not this side's."""
        self.tree.other_sides = others

    def freeze(self) -> None:
        self.tree.freeze()

    def thaw(self) -> None:
        self.tree.thaw()

    def cpu_seconds(self) -> float:
        return self.usage().cpu_s

    def usage(self) -> proctree.Usage:
        return proctree.usage(self.tree.pids())

    def await_exit(self, timeout_s: float) -> bool:
        """Waits (without reaping) up to timeout_s for the side to exit by itself after
        "done": it flushes its stdout and stderr on the way out, and killing it first loses
        what it printed. Bounded: a side that does not exit is killed by stop() anyway."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT):
                    return True
            except ChildProcessError:
                return True
            time.sleep(0.005)
        return False

    def stop(self) -> None:
        self.tree.kill_all()  # first: a side must not see its pipe close
        try:
            self.conn.close()
        except OSError:
            pass


def protect_tool() -> None:
    """Before forking any side: the tool becomes undumpable (a side cannot ptrace it or read
    its memory) and a subreaper (orphans of a side stay in its tree)."""
    ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    proctree.become_subreaper()


def fork_side(name: str, body: Callable[[Connection], None]) -> Side:
    """Forks a side that runs `body(conn)` and exits; only its end of the pipe (and stdio)
    stays open in it."""
    parent_end, child_end = wire.pipe_pair()
    pid = os.fork()
    if pid == 0:
        parent_end.close()
        os.closerange(3, child_end.fileno())
        os.closerange(child_end.fileno() + 1, 65536)
        _run_side(child_end, body)
    child_end.close()
    return Side(name, pid, parent_end)


def _run_side(conn: Connection, body: Callable[[Connection], None]) -> None:
    """Never returns. A side's failure goes to the tool as an error frame (which the tool
    treats as the side's word, i.e. a failure of that side, nothing more)."""
    code = 0
    try:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        body(conn)
    except SystemExit as e:
        code = 0 if e.code in (0, None) else 1
        if code:
            _send_error(conn, f"the submission called exit({e.code!r})")
    except BaseException:  # noqa: BLE001 - report the side's failure, whatever it is
        code = 1
        text = traceback.format_exc(limit=8)
        _send_error(conn, text[-4000:])
        try:
            sys.stderr.write(text)
        except (OSError, ValueError):
            pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _send_error(conn: Connection, text: str) -> None:
    try:
        conn.send_bytes(wire.ERROR_PREFIX + text.encode())
    except (OSError, ValueError):
        pass


def load_module(path: Path, name: str) -> Any:
    import importlib.util

    from perfbox.tools.types import ToolInputError

    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ToolInputError(f"cannot load {path.name}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def submission_body(workdir: Path, placement: confine.Placement,
                    build: Callable[[Any, dict[str, Any]], Callable[..., Any]],
                    module_file: str | None) -> Callable[[Connection], None]:
    """The submission side: confined before anything of the submission's loads, then its
    module imported, then `build(module, request)` gives the callable the loop runs."""
    from perfbox.tools.harness import side_loop

    def body(conn: Connection) -> None:
        # readable by the tool (same uid, its parent), which reads its outputs from its
        # memory; the filter then forbids changing that. The tool and the reference stay
        # undumpable: the submission can read neither.
        ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
        confine.confine_side(placement)
        conn.send_bytes(CONFINED)  # before any of the submission's code: it cannot forge this
        request = wire.loads(conn.recv_bytes(wire.MAX_MESSAGE_BYTES))
        request["_timer"] = _cuda_timer(request)  # bound before the module can patch anything
        if str(workdir) not in sys.path:
            sys.path.insert(0, str(workdir))
        module = load_module(workdir / module_file, "submission") if module_file else None
        fn = build(module, request)
        conn.send_bytes(wire.READY)
        side_loop.serve(conn, fn, request)

    return body


def reference_body(placement: confine.Placement,
                   build: Callable[[dict[str, Any]], Callable[..., Any]]
                   ) -> Callable[[Connection], None]:
    """The reference side: forked right after the submission's, before any secret exists, and
    then treated the same way: confined and placed alike, given its build request (the weight
    seed) on its pipe, built, served by the same loop. Two sides forked at different moments
    carried different histories (heap, collector, caches) and an identical kernel measured a
    few percent apart."""
    from perfbox.tools.harness import side_loop

    def body(conn: Connection) -> None:
        confine.confine_side(placement)
        conn.send_bytes(CONFINED)
        request = wire.loads(conn.recv_bytes(wire.MAX_MESSAGE_BYTES))
        request["_timer"] = _cuda_timer(request)
        fn = build(request)
        conn.send_bytes(wire.READY)
        side_loop.serve(conn, fn, request)

    return body


def _cuda_timer(request: dict[str, Any]) -> Any:
    if request.get("mode") == "bench" and request.get("device") == "cuda":
        from perfbox.tools.gpu_timing import CudaTimer

        return CudaTimer()
    return None
