"""What the warm worker does once, before it serves jobs: import the heavy modules, warm the
Triton compiler up, and give back every signal handler those imports installed."""

from __future__ import annotations

import importlib
import shutil
import signal
import tempfile
import traceback
from pathlib import Path

# the worker's own dispositions that are not "default": SIGPIPE and SIGXFSZ stay ignored (Python
# relies on EPIPE and EFBIG); everything else a library installed is reset after the imports
_KEEP_IGNORED = (signal.SIGPIPE, signal.SIGXFSZ)


def preload(modules: list[str]) -> list[str]:
    """Imports the heavy modules now so no job pays for them; missing ones are skipped."""
    loaded = []
    for name in modules:
        try:
            importlib.import_module(name)
            loaded.append(name)
        except ImportError:
            continue
    return loaded


def warm_up(preloaded: list[str]) -> None:
    """Compiles a bundled Triton kernel once so jobs inherit an initialised compiler.

    Triton's first compile in a process sets up MLIR/LLVM (about 0.5 s); forked jobs share the
    result copy-on-write and pay only their own kernel's compile (about 0.1 s).
    """
    if "triton" not in preloaded:
        return
    from perfbox.samples import SOFTMAX_PY
    from perfbox.tools.triton_compile import warm_up as compile_here

    workdir = Path(tempfile.mkdtemp(prefix="perfbox-warmup-"))
    try:
        (workdir / "warmup.py").write_text(SOFTMAX_PY.read_text())
        compile_here(workdir, "warmup.py")  # in this process: jobs fork from it
    except Exception:  # a failed warm-up only costs the first job some time
        traceback.print_exc()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def reset_signal_handlers() -> None:
    """Every signal back to its default action, but the ignored SIGPIPE/SIGXFSZ.

    The preloaded libraries and the warm-up compile install handlers (Python's SIGINT, LLVM's
    crash handlers for SIGSEGV, SIGXFSZ and others, ...). As pid 1 of a namespace (the sandbox, a container) the kernel
    drops any signal whose action is the default when a process of the namespace sends it, so
    with no handler left a job cannot interrupt, crash or spin the worker by signalling it.
    Jobs are forked after this and start from the same defaults."""
    for signum in signal.valid_signals():
        if signum in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            signal.signal(signum, signal.SIG_IGN if signum in _KEEP_IGNORED else signal.SIG_DFL)
        except (OSError, ValueError):
            pass  # reserved by the C library (the first real-time signals)
