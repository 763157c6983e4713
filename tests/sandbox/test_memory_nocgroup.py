"""Where no cgroup limits memory (`perfbox serve --no-cgroups`, or a host without usable
cgroups), the worker's watchdog counts what a job holds outside its processes' page tables as
well: its tmpfs files, daemons that left its process tree, and memfds (which submitted code
cannot make at all). Real servers: bwrap with cgroups off, and docker (per-request limits)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from perfbox.api.v1 import tools_pb2 as pb
from perfbox.client import ToolClient
from tests.conftest import TRITON_KERNEL, cuda_request, requires_bwrap, start_docker_server, \
    start_server, triton_request, wait_no_job_processes

pytestmark = requires_bwrap


@pytest.fixture(scope="module", params=["bwrap", "docker"])
def client(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
           ) -> Iterator[ToolClient]:
    """bwrap with cgroups off; docker, whose container is sized by the server's defaults, so a
    request's tighter memory limit is the worker's watchdog's inside the container."""
    tmp = tmp_path_factory.mktemp("nocg")
    if request.param == "bwrap":
        srv, port = start_server(tmp, workers=1, use_cgroups=False)
        assert srv.cgroups is None
    else:
        srv, port = start_docker_server(tmp, workers=1)
    with ToolClient(f"127.0.0.1:{port}", timeout_s=120) as c:
        yield c
    srv.stop(grace_s=2)


def hostile(client: ToolClient, body: str) -> pb.ToolResult:
    request = triton_request(TRITON_KERNEL + "\n" + body, no_cache=True)
    request.limits.memory_bytes = 384 << 20
    request.limits.max_file_bytes = 1 << 30
    request.limits.wall_time_ms = 60_000
    return client.run(request)


def test_submitted_code_cannot_make_a_memfd(client: ToolClient) -> None:
    result = hostile(client, """
import os
try:
    os.memfd_create("hidden")
    print("MADE")
except OSError as e:
    print("REFUSED", e.errno)
""")
    assert result.status == pb.OK and "REFUSED 1" in result.stdout, result.stdout


def test_files_in_tmp_count(client: ToolClient) -> None:
    """450 MB in tmpfs files (no process maps them) against a 384 MiB limit."""
    result = hostile(client, """
import time
chunk = b"x" * (16 << 20)
for i in range(28):
    with open(f"/tmp/f{i}", "wb") as f:
        f.write(chunk)
time.sleep(5)
""")
    assert result.status == pb.MEMORY_LIMIT, result.summary


def test_a_daemon_out_of_the_tree_counts(client: ToolClient) -> None:
    """A setsid double-forked daemon allocates while the module waits: still this job's."""
    result = hostile(client, """
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        blocks = [bytearray(64 << 20) for _ in range(8)]
        time.sleep(60)
    os._exit(0)
time.sleep(10)
""")
    assert result.status == pb.MEMORY_LIMIT, result.summary
    assert wait_no_job_processes() == []
    assert client.run(cuda_request(no_cache=True)).status == pb.OK


def test_a_hundred_spinning_processes_do_not_silence_the_worker(client: ToolClient) -> None:
    """Red-team finding: 100 busy children (their RSS far over the limit by shared pages, under
    it by PSS) kept the worker's page-table walk from finishing for over 10 s; the server took
    the silence for a wedged worker and answered INTERNAL_ERROR. The walk now proceeds a few
    processes per poll: the worker keeps its heartbeat and the job ends as the job decides."""
    result = hostile(client, """
import os, time
kids = []
for _ in range(100):
    pid = os.fork()
    if pid == 0:
        t = time.monotonic()
        while time.monotonic() - t < 20:
            pass
        os._exit(0)
    kids.append(pid)
for kid in kids:
    os.waitpid(kid, 0)
""")
    assert result.status == pb.OK, result.summary
