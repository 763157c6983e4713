"""Faults, each ending with every job accounted for (a result or a clear error), nothing left
behind (processes, containers, files) and the service healthy: a worker killed mid-job, the
server SIGTERMed mid-batch and restarted, a client disconnecting mid-batch, a job filling its
workspace, the cache's disk full, the cache directory corrupted."""

from __future__ import annotations

import os
import signal
import subprocess
from collections import Counter
from pathlib import Path

import grpc
import pytest

from perfbox.api.v1 import tools_pb2 as pb
from perfbox.sandbox.memory_watch import tree_pids
from perfbox.client import ToolClient, make_request
from perfbox.sandbox.bwrap import SANDBOX_UID_BASE
from tests.conftest import (SPIN, TRITON_KERNEL, cuda_request, free_port, requires_bwrap,
                            sandbox_processes, serve_process, start_server, start_spinning_job,
                            triton_request, wait_no_job_processes, wait_until)

pytestmark = [requires_bwrap, pytest.mark.slow]
KERNEL = "__global__ void k{n}(float* x) {{ x[threadIdx.x] -= {n}.0f; }}\n"




def _healthy(client: ToolClient) -> None:
    assert wait_no_job_processes() == []
    assert client.health() == "SERVING"
    assert client.run(cuda_request(no_cache=True)).status == pb.OK


def test_worker_killed_mid_job_fails_only_that_job(tmp_path: Path) -> None:
    server, port = start_server(tmp_path, workers=1, preload=())
    try:
        with ToolClient(f"127.0.0.1:{port}", timeout_s=120) as client:
            future = start_spinning_job(client, server, wall_time_ms=30_000)
            # every process of this server's slot-0 sandbox (the worker and the job), killed
            # from outside; only this server's: other servers on the machine use the same uids
            worker = server.scheduler.slots[0].worker
            assert worker is not None and worker.proc is not None
            mine = set(tree_pids(worker.proc.pid))
            victims = [pid for pid, uid, _ in sandbox_processes()
                       if uid == SANDBOX_UID_BASE and pid in mine]
            assert len(victims) >= 2
            for pid in victims:
                os.kill(pid, signal.SIGKILL)
            result = future.result()
            assert result.status == pb.INTERNAL_ERROR and "worker" in result.error.lower(), \
                (pb.Status.Name(result.status), result.error)
            _healthy(client)  # a fresh worker serves the next job
    finally:
        server.stop(grace_s=1)




@pytest.mark.timeout(600)
@pytest.mark.parametrize("sig, calls, distinct, after", [
    (signal.SIGKILL, 1000, 50, 100),  # a thousand-call batch, the server and workers killed
    (signal.SIGTERM, 120, 120, 20),  # a graceful stop: the grace period, then UNAVAILABLE
], ids=["SIGKILL-1000", "SIGTERM-120"])
def test_a_batch_survives_the_server_stopping_and_restarting(
        tmp_path: Path, sig: int, calls: int, distinct: int, after: int) -> None:
    """The server is stopped after `after` results and restarted on the same port; the client
    resends what has no result. Every request_id comes back exactly once, each OK."""
    port, cache = free_port(), tmp_path / "cache"
    server = serve_process(port, cache, "--grace-s", "2")
    requests = [make_request("compile", {f"k{i % distinct}.cu": KERNEL.format(n=i % distinct)},
                             archs=["sm_90"], request_id=f"call-{i}") for i in range(calls)]
    seen: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    restarted = None
    try:
        with ToolClient(f"127.0.0.1:{port}", timeout_s=300) as client:
            client.wait_ready(timeout_s=60)
            for result in client.run_batch(requests):
                seen[result.request_id] += 1
                statuses[result.status] += 1
                if sum(seen.values()) == after and restarted is None:
                    os.killpg(server.pid, sig)  # the server (and, for SIGKILL, its workers)
                    exit_code = server.wait(timeout=60)
                    assert sig == signal.SIGKILL or exit_code == 0  # SIGTERM: a clean exit
                    restarted = serve_process(port, cache, "--grace-s", "2")
        assert restarted is not None, "the batch ended before the server could be stopped"
        assert len(seen) == calls and set(seen.values()) == {1}, \
            [k for k, v in seen.items() if v != 1][:5]
        assert statuses == Counter({pb.OK: calls})
    finally:
        for proc in (server, restarted):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)


def test_client_disconnecting_mid_batch_cancels_its_jobs(tmp_path: Path) -> None:
    server, port = start_server(tmp_path, workers=2, preload=())
    try:
        channel_client = ToolClient(f"127.0.0.1:{port}", timeout_s=60)
        spins = []
        for i in range(6):
            spin = triton_request(SPIN + f"# {i}\n", request_id=f"spin-{i}", no_cache=True)
            spin.limits.wall_time_ms = 60_000
            spins.append(spin)
        stream = channel_client.stub.RunBatch(iter(spins), timeout=60)
        wait_until(lambda: len(server.scheduler.running_jobs()) == 2)
        stream.cancel()  # the client goes away mid-batch
        channel_client.close()
        wait_until(lambda: not server.scheduler.running_jobs() and server.scheduler.queue_depth == 0)
        with ToolClient(f"127.0.0.1:{port}", timeout_s=60) as client:
            _healthy(client)
    finally:
        server.stop(grace_s=1)


def test_a_job_filling_its_workspace_gets_a_clear_error(client: ToolClient) -> None:
    body = """
import errno
try:
    with open("fill.bin", "wb") as f:
        for _ in range(2048):
            f.write(b"x" * (1 << 20))
    print("FILLED")
except OSError as e:
    print("FULL", errno.errorcode.get(e.errno))
    raise
"""
    request = triton_request(TRITON_KERNEL + body, no_cache=True)
    request.limits.max_file_bytes = 4 << 30  # let the tmpfs size, not RLIMIT_FSIZE, stop it
    result = client.run(request, timeout_s=120)
    assert result.status == pb.COMPILE_ERROR, pb.Status.Name(result.status)
    assert "FULL ENOSPC" in result.stdout
    assert "No space left" in result.summary + result.stderr + result.error, result.summary
    _healthy(client)


def test_cache_disk_full_costs_entries_not_answers(tmp_path: Path) -> None:
    """The cache directory on a full filesystem (a 1 MiB tmpfs, filled): calls still answer,
    and no half-written entry stays."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    cache = tmp_path / "cache"
    cache.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(cache)], check=True)
    try:
        _fill(cache)
        server, port = start_server(tmp_path, workers=1, preload=(), cache_dir=cache)
        try:
            with ToolClient(f"127.0.0.1:{port}", timeout_s=120) as client:
                for _ in range(2):
                    result = client.run(cuda_request())
                    assert result.status == pb.OK and not result.cache_hit
                _healthy(client)
        finally:
            server.stop(grace_s=1)
        leftovers = [p for p in cache.rglob(".tmp-*")]
        assert leftovers == []
    finally:
        subprocess.run(["umount", str(cache)], check=False)


def _fill(directory: Path) -> None:
    try:
        with open(directory / "filler", "wb") as f:
            while True:
                f.write(b"\0" * 65536)
    except OSError:
        pass


def test_corrupted_cache_directory_is_recomputed(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    server, port = start_server(tmp_path, workers=1, preload=(), cache_dir=cache)
    try:
        with ToolClient(f"127.0.0.1:{port}", timeout_s=120) as client:
            first = client.run(cuda_request())
            assert first.status == pb.OK and client.run(cuda_request()).cache_hit
            entries = [p for p in cache.rglob("*") if p.is_file()]
            assert entries
            for i, path in enumerate(entries):  # flipped bytes, truncation, garbage
                data = path.read_bytes()
                path.write_bytes([data[:-7] + b"garbage", data[:10], b"\xff" * 64][i % 3])
            again = client.run(cuda_request())
            assert again.status == pb.OK and not again.cache_hit  # a miss, recomputed
            assert again.compile.kernels[0].registers == first.compile.kernels[0].registers
            assert client.run(cuda_request()).cache_hit  # and stored afresh
            _healthy(client)
    finally:
        server.stop(grace_s=1)


def test_grpc_errors_name_the_fault_when_the_server_is_gone(tmp_path: Path) -> None:
    """A call to a node that went away answers UNAVAILABLE (the client's retries end), never
    hangs past its deadline."""
    server, port = start_server(tmp_path, workers=1, preload=())
    server.stop(grace_s=1)
    with ToolClient(f"127.0.0.1:{port}", timeout_s=5) as client:
        with pytest.raises(grpc.RpcError) as e:
            client.stub.Run(cuda_request(), timeout=5, wait_for_ready=False)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
