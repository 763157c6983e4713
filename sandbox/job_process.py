"""One job's process: forked from the warm worker, it enters a fresh sandbox, waits for its one
job, runs the tool and reports the outcome on its result pipe.

The result pipe is the one channel whose content becomes an answer, so nothing submitted runs
in this process: tools that must load submitted code do it in a confined child of their own
(`perfbox.tools.untrusted`), and check/bench fork the submission before anything of theirs.
Failures the job itself caused (its workspace full, its process or thread limit reached, its
memory exhausted) are reported with the job's status, not as perfbox's INTERNAL_ERROR.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

from perfbox.sandbox import framing, job_filter, jobns
from perfbox.sandbox.bwrap import JOB_DIR as ISOLATED_WORKDIR
from perfbox.sandbox.worker_protocol import OUTCOME_KIND, JobFrame, SourceFile, parse

PR_SET_DUMPABLE = 4
EXIT_SETUP_FAILED = 70


def run(job_r: int, isolate: bool, keep_under_tmp: list[str], workdir: str, out_w: int,
        err_w: int, res_w: int) -> None:
    """Runs in the forked child; never returns. `workdir` is the process backend's workspace
    (made by the worker, which removes it); isolated jobs mount a fresh /job instead."""
    code = 0
    try:
        set_dumpable(True)
        if isolate:
            jobns.enter_namespaces()
            jobns.mount_fresh_filesystems(ISOLATED_WORKDIR, keep_under_tmp)
            workdir = ISOLATED_WORKDIR
        else:
            jobns.die_with_parent()
            os.setsid()
        message = framing.read_frame(job_r, framing.FrameReader(), [])
        os.close(job_r)
        if message is None:  # the worker went away before giving us a job
            os._exit(0)
        job = parse(message)
        if not isinstance(job, JobFrame):
            raise framing.FrameError(f"a job process was sent a {job.KIND} frame")
        outcome = _run_job(job, isolate, workdir, out_w, err_w, res_w)
    except (jobns.SandboxSetupError, job_filter.JobFilterUnavailable) as e:
        outcome = _failed("INTERNAL_ERROR", "The sandbox could not be set up.",
                          f"sandbox setup failed: {e}")
        code = EXIT_SETUP_FAILED
    except BaseException as e:  # noqa: BLE001 - the job must always report and exit
        traceback.print_exc()
        outcome = job_caused(e) or _failed("INTERNAL_ERROR", "perfbox failed running the tool.",
                                           f"{type(e).__name__}: {e}")
        code = EXIT_SETUP_FAILED
    try:
        sys.stdout.flush(), sys.stderr.flush()
        framing.write_frame(res_w, {"type": OUTCOME_KIND, "outcome": outcome})
    finally:
        os._exit(code)


def _run_job(job: JobFrame, isolate: bool, workdir: str, out_w: int, err_w: int,
             res_w: int) -> dict[str, Any]:
    limits = job.limits
    write_files(Path(workdir), job.files)
    os.chdir(workdir)
    tmp = "/tmp" if isolate else workdir
    os.environ.update(HOME=workdir, TMPDIR=tmp, TRITON_CACHE_DIR=str(Path(tmp) / ".triton"))
    # RLIMIT_NPROC counts the uid's processes: right in a job's own user namespace and in
    # a container (pid 1's children), wrong beside the server's own processes
    jobns.apply_rlimits(limits, limit_processes=isolate or os.getppid() == 1)
    jobns.prefer_as_oom_victim()
    if isolate:
        jobns.drop_capabilities()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0), os.dup2(out_w, 1), os.dup2(err_w, 2)
    os.closerange(3, res_w)
    os.closerange(res_w + 1, 65536)
    if job.memory_watchdog and not Path("/dev/nvidiactl").exists():
        from perfbox.tools.harness.confine import DENY_MEMFD_ENV

        os.environ[DENY_MEMFD_ENV] = "1"  # check/bench sides then refuse memfds (no cgroup)
    try:
        job_filter.install(job.tool, job.memory_watchdog)
    except job_filter.JobFilterUnavailable:
        if isolate or os.getppid() == 1:
            raise  # a sandboxed job (bubblewrap, or a container's) never runs unfiltered
        print("perfbox: no seccomp filter on the development backend", file=sys.stderr)
    return _run_tool(job, Path(workdir))


def write_files(workdir: Path, files: tuple[SourceFile, ...]) -> None:
    for entry in files:
        path = workdir / entry.name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(entry.content)


def _run_tool(job: JobFrame, workdir: Path) -> dict[str, Any]:
    from perfbox import tools
    from perfbox.tools.types import ToolRequest

    request = ToolRequest(tool=job.tool, language=job.language,
                          files=[f.name for f in job.files], workdir=workdir,
                          options=job.options)
    return tools.run(request).to_json()


def job_caused(error: BaseException) -> dict[str, Any] | None:
    """The outcome of an exception the job's own resource use caused, else None."""
    if isinstance(error, MemoryError):
        return _failed("MEMORY_LIMIT", "The job ran out of memory.", "MemoryError")
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return _failed("OUTPUT_LIMIT", "The job's workspace is full; write less to disk.",
                       f"no space left in the workspace: {error}")
    if isinstance(error, OSError) and error.errno in (errno.EAGAIN, errno.EMFILE,
                                                      errno.ENFILE):
        return _failed("RUNTIME_ERROR", "The job hit its process, thread or open-file limit.",
                       f"resource limit reached: {error}")
    if isinstance(error, RuntimeError) and "can't start new thread" in str(error):
        return _failed("RUNTIME_ERROR", "The job hit its process or thread limit.",
                       f"resource limit reached: {error}")
    return None


def _failed(status: str, summary: str, error: str) -> dict[str, Any]:
    return {"status": status, "summary": summary, "report": {}, "error": error}


def set_dumpable(on: bool) -> None:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 1 if on else 0, 0, 0, 0)


def make_workspace() -> str:
    """The process backend's per-job workspace, made (and later removed) by the worker."""
    return tempfile.mkdtemp(prefix="perfbox-job-")
