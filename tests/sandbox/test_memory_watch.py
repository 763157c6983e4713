"""The no-cgroup memory limit measures a job's tree by PSS (a forking job is not charged once
per child for pages it shares), and pays for the page-table walk only when RSS says over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from perfbox.sandbox import memory_watch as M
from perfbox.sandbox.memory_watch import MemoryWatch

TREE = """
import os, sys, time
mb, children = int(sys.argv[1]), int(sys.argv[2])
data = bytearray(mb << 20)
for i in range(0, len(data), 4096):
    data[i] = 1
for _ in range(children):
    if os.fork() == 0:
        time.sleep(600)
print("ready", flush=True)
time.sleep(600)
"""


@pytest.fixture()
def tree(request: pytest.FixtureRequest) -> Iterator[int]:
    """A parent that touched MB megabytes, then forked CHILDREN children sharing them."""
    mb, children = request.param
    proc = subprocess.Popen([sys.executable, "-c", TREE, str(mb), str(children)],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    yield proc.pid
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.parametrize("tree", [(256, 8)], indirect=True)
def test_shared_copy_on_write_pages_count_once(tree: int) -> None:
    assert len(M.tree_pids(tree)) == 9
    rss = sum(M.rss_bytes(p) for p in M.tree_pids(tree))
    assert rss > 2 << 30  # RSS charges the 256 MB nine times
    watch = MemoryWatch(tree, 1 << 30)
    assert not watch.over() and watch.pss_checks == 1  # PSS: about 256 MB, under 1 GiB


@pytest.mark.parametrize("tree", [(256, 0)], indirect=True)
def test_a_tree_over_its_limit_is_over(tree: int) -> None:
    assert MemoryWatch(tree, 128 << 20).over()


@pytest.mark.parametrize("tree", [(64, 2)], indirect=True)
def test_under_by_rss_never_walks_the_page_tables(tree: int,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(pid: int) -> int:
        raise AssertionError("PSS read although RSS was under the limit")

    monkeypatch.setattr(M, "pss_bytes", fail)
    watch = MemoryWatch(tree, 1 << 30)
    assert not any(watch.over() for _ in range(20)) and watch.pss_checks == 0


@pytest.mark.parametrize("tree", [(256, 8)], indirect=True)
def test_page_table_walks_are_rationed(tree: int) -> None:
    """Over by RSS, under by PSS: polled back to back, the walks take at most about max_share
    of the time (a job cannot buy itself the supervisor's core by forking)."""
    watch = MemoryWatch(tree, 1 << 30, max_share=0.1)
    polls = 0
    while polls < 200:
        assert not watch.over()
        polls += 1
    assert 1 <= watch.pss_checks < polls // 4


MEMFD_TREE = """
import os, sys, time
mb, children = int(sys.argv[1]), int(sys.argv[2])
for _ in range(children):
    if os.fork() == 0:
        time.sleep(600)
fd = os.memfd_create("hidden")
chunk = b"x" * (1 << 20)
for _ in range(mb):
    os.write(fd, chunk)
print("ready", flush=True)
time.sleep(600)
"""


def test_memfds_count_even_when_each_poll_scans_one_process() -> None:
    """A memfd no page table shows is found by the descriptor scan; with a budget so small
    that each poll scans a single process, the scan still reaches it within a round."""
    proc = subprocess.Popen([sys.executable, "-c", MEMFD_TREE, "200", "8"],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        watch = MemoryWatch(proc.pid, 150 << 20, scan_budget_s=0.0, max_share=1.0)
        polls = [watch.over() for _ in range(3 * len(M.tree_pids(proc.pid)))]
        assert polls[-1], polls  # found once the scan's round reached the holder
        assert not polls[0], polls  # the first poll scanned one child, not the holder
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


BURST_TREE = """
import os, sys, time
flag = sys.argv[1]
data = bytearray(256 << 20)
for i in range(0, len(data), 4096):
    data[i] = 1
for _ in range(8):
    if os.fork() == 0:
        while not os.path.exists(flag):
            time.sleep(0.01)
        mine = bytearray(160 << 20)  # new private pages: RSS grows with them
        for i in range(0, len(mine), 4096):
            mine[i] = 1
        time.sleep(600)
print("ready", flush=True)
time.sleep(600)
"""


def test_a_burst_after_the_walk_counts_at_once(tmp_path) -> None:
    """Red-team finding: after a PSS walk found a forking job under its limit, its children
    allocated 600 MB each and were only charged when the walk's ration allowed the next one
    (3.5 s later, 40% over). Growth since a process's sample now counts at the next poll."""
    flag = tmp_path / "go"
    proc = subprocess.Popen([sys.executable, "-c", BURST_TREE, str(flag)],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        watch = MemoryWatch(proc.pid, 1 << 30)  # 256 MB shared by 9: well under by PSS
        deadline = time.monotonic() + 30
        while watch.pss_checks < 9 and time.monotonic() < deadline:
            assert not watch.over()  # every process sampled, none over
            time.sleep(0.05)
        walks = watch.pss_checks
        flag.touch()  # the children allocate 8 x 160 MB
        deadline = time.monotonic() + 10
        while not watch.over():
            assert time.monotonic() < deadline, "the burst was never charged"
            time.sleep(0.05)
        assert watch.pss_checks - walks <= 8  # charged from RSS growth, not a full re-walk
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
