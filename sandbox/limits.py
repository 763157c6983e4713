"""Every limit, default and maximum of the service in one place.

A request's `Limits` field may lower or raise a limit up to the server's maximum; zero means the
default. Units are in the names.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

MiB = 1024 * 1024
GiB = 1024 * MiB

# Request size: what the service accepts before any work.
MAX_FILES = 64
MAX_FILE_NAME_BYTES = 1024  # a file name's whole UTF-8 encoding
MAX_NAME_COMPONENT_BYTES = 255  # one path component's UTF-8 encoding (Linux NAME_MAX)
# A CUDA source's base name: nvcc names its temporaries after it with up to ~45 more bytes
# (tmpxft_XXXXXXXX_XXXXXXXX-N_<stem>.cudafe1.stub.c), outputs are <stem>.<arch>.cubin, and
# all must fit NAME_MAX.
MAX_CUDA_SOURCE_NAME_BYTES = 200
MAX_SOURCE_BYTES = 4 * MiB  # all files of one request together
MAX_REQUEST_ID_CHARS = 256

# What a result carries back.
MAX_STREAM_KEEP_BYTES = 32 * 1024  # stdout/stderr kept per stream in a result (head + tail)
MAX_LOG_EVENT_BYTES = 64 * 1024  # stdout/stderr forwarded as RunStream log events per job
# The tool's outcome frame on a job's result pipe: bounded before it is buffered. JSON escapes
# grow a non-ASCII text at most 6x on the way to the server, which stays under the 64 MiB frame.
MAX_RESULT_BYTES = 8 * MiB

# Service capacity.
DEFAULT_MAX_QUEUE = 4096  # queued jobs beyond this get RESOURCE_EXHAUSTED
DEFAULT_GRACE_S = 30.0  # SIGTERM: how long running jobs may finish before being cancelled
WORKER_START_TIMEOUT_S = 120.0  # a warm worker importing torch/triton on a slow disk
HEARTBEAT_PERIOD_S = 1.0  # a worker running a job says it is alive this often
# no frame from a worker for this long while it runs a job: it is wedged; the slot is killed
HEARTBEAT_TIMEOUT_S = 10.0

# Per-job sandbox.
WORKSPACE_BYTES = 512 * MiB  # tmpfs size of /work (and of /tmp) inside a job
JOB_NOFILE = 1024  # open files per process


@dataclass(frozen=True)
class JobLimits:
    """Limits of one job, all enforced around the job's whole process tree."""

    wall_time_ms: int = 60_000  # whole tree killed at this wall-clock age
    cpu_time_ms: int = 120_000  # RLIMIT_CPU per process
    memory_bytes: int = 4 * GiB  # cgroup memory (RSS watchdog where no cgroup)
    max_processes: int = 128  # cgroup pids.max plus RLIMIT_NPROC
    max_file_bytes: int = 256 * MiB  # RLIMIT_FSIZE
    max_output_bytes: int = 8 * MiB  # stdout + stderr volume before OUTPUT_LIMIT

    def to_json(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "JobLimits":
        return cls(**{f.name: int(data[f.name]) for f in fields(cls) if f.name in data})


DEFAULT_LIMITS = JobLimits()
# A request's non-zero limit below these is refused: a job could not even start under it (a
# tiny memory limit kills the worker itself, a few processes cannot hold a compiler), and the
# failure would read as the kernel's.
MIN_LIMITS = JobLimits(
    wall_time_ms=100,
    cpu_time_ms=100,
    memory_bytes=64 * MiB,
    max_processes=8,
    max_file_bytes=1 * MiB,
    max_output_bytes=4 * 1024,
)
# On a node with GPUs, unless the operator set other defaults: a CUDA job is several processes
# (tool, submission, reference; ncu or compute-sanitizer and its target), each with a CUDA
# context (~1-2 GiB of host memory) and a thread per core, and profiling replays every kernel.
GPU_DEFAULT_LIMITS = JobLimits(wall_time_ms=300_000, cpu_time_ms=600_000,
                               memory_bytes=32 * GiB, max_processes=1024)
MAX_LIMITS = JobLimits(
    wall_time_ms=30 * 60_000,
    cpu_time_ms=60 * 60_000,
    memory_bytes=64 * GiB,
    max_processes=1024,
    max_file_bytes=4 * GiB,
    max_output_bytes=256 * MiB,
)
