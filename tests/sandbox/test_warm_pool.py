"""Warm workers: the imports are paid once, and each job starts from a clean slate."""

from __future__ import annotations

from pathlib import Path

import pytest

from perfbox.api.v1 import tools_pb2 as pb
from perfbox.client import ToolClient
from tests.conftest import TRITON_KERNEL, requires_bwrap, start_server, triton_request

LEAVE = TRITON_KERNEL + """
import os, sys
for path in ("/job/left.txt", "/tmp/left.txt", "/dev/shm/left.txt"):
    open(path, "w").write("secret from job 1")
sys.modules["json"].LEFT_BY_JOB_1 = True
os.environ["LEFT_BY_JOB_1"] = "1"
print("LEFT")
"""

LOOK = TRITON_KERNEL + """
import os, sys, json
print("FILES", [p for p in ("/job/left.txt", "/tmp/left.txt", "/dev/shm/left.txt")
                 if os.path.exists(p)])
print("MODULE", getattr(json, "LEFT_BY_JOB_1", False), "ENV", os.environ.get("LEFT_BY_JOB_1"))
print("TORCH_LOADED", "torch" in sys.modules)
"""


@requires_bwrap
def test_a_job_sees_nothing_the_previous_one_left(tmp_path: Path) -> None:
    server, port = start_server(tmp_path, workers=1)
    try:
        with ToolClient(f"127.0.0.1:{port}") as client:
            first = client.run(triton_request(LEAVE, no_cache=True))
            second = client.run(triton_request(LOOK, no_cache=True))
    finally:
        server.stop(grace_s=1)
    assert first.status == pb.OK and "LEFT" in first.stdout, first.summary
    assert second.status == pb.OK, second.summary
    assert "FILES []" in second.stdout
    assert "MODULE False ENV None" in second.stdout
    assert "TORCH_LOADED True" in second.stdout  # preloaded by the warm worker


@requires_bwrap
def test_cold_mode_starts_a_worker_per_job(tmp_path: Path) -> None:
    server, port = start_server(tmp_path, workers=1, warm=False, preload=())
    try:
        with ToolClient(f"127.0.0.1:{port}") as client:
            results = [client.run(triton_request(LOOK, no_cache=True)) for _ in range(2)]
        assert all(r.status == pb.OK for r in results)
        assert server.scheduler.slots[0].worker is None or not server.scheduler.slots[0].worker.alive
    finally:
        server.stop(grace_s=1)


def test_process_backend_is_refused_unless_allowed(tmp_path: Path) -> None:
    from perfbox.sandbox.config import ConfigError

    with pytest.raises(ConfigError, match="allow-unsafe-process-backend"):
        start_server(tmp_path, backend="process")


def test_process_backend_runs_when_allowed(tmp_path: Path) -> None:
    server, port = start_server(tmp_path, backend="process", allow_unsafe_process_backend=True,
                                workers=1, preload=())
    try:
        with ToolClient(f"127.0.0.1:{port}") as client:
            result = client.run(triton_request(no_cache=True))
        assert result.status == pb.OK and result.identity.backend == "process"
    finally:
        server.stop(grace_s=1)


@requires_bwrap
def test_stop_leaves_no_runtime_files_cgroups_or_workers(tmp_path: Path) -> None:
    import os

    server, port = start_server(tmp_path, workers=2, preload=())
    with ToolClient(f"127.0.0.1:{port}") as client:
        assert client.run(triton_request(no_cache=True)).status == pb.OK
    cgroup_dirs = [] if server.cgroups is None else list(server.cgroups.parents.values())
    workers = [s.worker.proc.pid for s in server.scheduler.slots if s.worker and s.worker.proc]
    runtime_dir = server.runtime_dir
    server.stop(grace_s=1)
    assert not runtime_dir.exists()
    assert not any(d.exists() for d in cgroup_dirs)
    assert not any(os.path.exists(f"/proc/{pid}") for pid in workers)
