"""The result cache: canonical keys that cover limits and backend, atomic checksummed entries
(corruption is a miss), a size bound with least-recently-used eviction, each entry's origin; and
against a real server, that nobody can store a failure under someone else's call."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from perfbox.api.v1 import tools_pb2 as pb
from perfbox.client import ToolClient
from perfbox.sandbox.cache import CacheEntry, Origin, ResultCache, cache_key
from perfbox.sandbox.limits import DEFAULT_LIMITS, JobLimits, MiB
from perfbox.sandbox.server import ToolServer
from perfbox.sandbox.service import _located_error, _tighter
from tests.conftest import SAMPLE_CU, cuda_request, requires_bwrap, start_server

LIMITS = DEFAULT_LIMITS.to_json()
ORIGIN = Origin(job_id="job-1", request_id="req-1", client="alice", created_unix=1.5e9)
# the smallest file-size limit a request may ask for; nvcc's preprocessed intermediate file
# alone is larger, so a compile under it fails without a word about the source
TINY_FILE_BYTES = 1 * MiB


def _key(files: list[tuple[str, str]], options: dict[str, object], toolkit: str = "nvcc 13",
         limits: dict[str, int] = LIMITS, backend: str = "bwrap") -> str:
    return cache_key("compile", "cuda", files, options, toolkit, limits=limits, backend=backend)


def test_key_ignores_option_order_but_not_content() -> None:
    files = [("k.cu", "a")]
    a = _key(files, {"archs": ["sm_90"], "defines": ["X"]})
    assert a == _key(files, {"defines": ["X"], "archs": ["sm_90"]})
    assert a != _key([("k.cu", "b")], {"archs": ["sm_90"], "defines": ["X"]})
    assert a != _key(files, {"archs": ["sm_90"], "defines": ["X"]}, toolkit="nvcc 13.1")
    # names and contents are length-prefixed: moving bytes between them changes the key
    assert _key([("ab", "c")], {}) != _key([("a", "bc")], {})


def test_key_covers_limits_and_backend() -> None:
    files, options = [("k.cu", "a")], {"archs": ["sm_90"]}
    base = _key(files, options)
    for name in LIMITS:
        changed = dict(LIMITS, **{name: LIMITS[name] // 2})
        assert _key(files, options, limits=changed) != base, name
    assert _key(files, options, limits=dict(reversed(list(LIMITS.items())))) == base
    assert _key(files, options, backend="docker") != base


def test_round_trip_origin_and_corruption(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path)
    cache.put("ab" * 32, b"result-bytes", ORIGIN)
    assert cache.get("ab" * 32) == CacheEntry(b"result-bytes", ORIGIN)
    # the origin is on disk: another server on the same directory reads it too
    assert ResultCache(tmp_path).get("ab" * 32) == CacheEntry(b"result-bytes", ORIGIN)
    entry = tmp_path / "ab" / ("ab" * 32)
    entry.write_bytes(entry.read_bytes()[:-3] + b"xyz")
    assert cache.get("ab" * 32) is None
    assert not entry.exists() and cache.total_bytes == 0
    assert cache.get("cd" * 32) is None
    assert (cache.hits, cache.misses) == (1, 2)


def test_disabled_cache(tmp_path: Path) -> None:
    cache = ResultCache(None)
    cache.put("ab" * 32, b"x", ORIGIN)
    assert cache.get("ab" * 32) is None


def _entry_bytes(tmp_path: Path) -> int:
    """The on-disk size of one 1000-byte entry with ORIGIN."""
    probe = ResultCache(tmp_path / "probe")
    probe.put("00" * 32, b"x" * 1000, ORIGIN)
    return probe.total_bytes


def _on_disk(directory: Path) -> set[str]:
    return {p.name for p in directory.glob("??/*")}


def test_lru_eviction_keeps_the_total_under_the_bound(tmp_path: Path) -> None:
    size = _entry_bytes(tmp_path)
    directory = tmp_path / "cache"
    cache = ResultCache(directory, max_bytes=3 * size)
    a, b, c, d, e = (ch * 64 for ch in "abcde")
    for key in (a, b, c):
        cache.put(key, b"x" * 1000, ORIGIN)
    assert cache.total_bytes == 3 * size and _on_disk(directory) == {a, b, c}
    assert cache.get(a) is not None  # a is now the most recently used; b the least
    cache.put(d, b"x" * 1000, ORIGIN)
    assert _on_disk(directory) == {a, c, d}
    assert cache.total_bytes <= 3 * size
    cache.put(e, b"x" * 2000, ORIGIN)  # a larger entry evicts as many as it needs
    assert _on_disk(directory) == {d, e} and cache.total_bytes <= 3 * size
    assert cache.get(b) is None and cache.get(e) is not None


def test_a_restart_indexes_entries_by_mtime(tmp_path: Path) -> None:
    size = _entry_bytes(tmp_path)
    directory = tmp_path / "cache"
    first = ResultCache(directory)
    keys = [ch * 64 for ch in "abcd"]
    for key in keys:
        first.put(key, b"x" * 1000, ORIGIN)
    (directory / "ab").mkdir()
    (directory / "ab" / ".tmp-left-behind").write_bytes(b"?" * 5000)  # not an entry
    (directory / "filler").write_bytes(b"?" * 5000)
    for age, key in zip((10, 40, 30, 20), keys):  # b oldest, then c, d, a
        stamp = 1_700_000_000 - age
        os.utime(directory / key[:2] / key, (stamp, stamp))
    restarted = ResultCache(directory, max_bytes=2 * size)  # over the bound: trimmed at once
    assert _on_disk(directory) - {".tmp-left-behind"} == {keys[0], keys[3]}
    assert restarted.total_bytes == 2 * size
    before = (directory / keys[3][:2] / keys[3]).stat().st_mtime
    assert restarted.get(keys[3]) is not None  # a hit refreshes the mtime
    assert (directory / keys[3][:2] / keys[3]).stat().st_mtime > before


def test_only_the_sources_own_answers_under_default_limits_are_storable() -> None:
    files = [("src/k.cu", "...")]
    assert not _tighter(DEFAULT_LIMITS, DEFAULT_LIMITS)
    assert not _tighter(JobLimits(wall_time_ms=DEFAULT_LIMITS.wall_time_ms * 2), DEFAULT_LIMITS)
    assert _tighter(JobLimits(max_processes=8), DEFAULT_LIMITS)
    assert _tighter(JobLimits(wall_time_ms=10**9, max_file_bytes=MiB), DEFAULT_LIMITS)

    def failed(*diagnostics: pb.Diagnostic, tool: str = "compile") -> pb.ToolResult:
        report = pb.CompileReport(diagnostics=list(diagnostics))
        if tool == "disasm":
            return pb.ToolResult(status=pb.COMPILE_ERROR, disasm=pb.DisasmReport(compile=report))
        return pb.ToolResult(status=pb.COMPILE_ERROR, compile=report)

    located = pb.Diagnostic(file="./src/k.cu", line=3, severity="error", message="oops")
    assert _located_error(failed(located), files)
    assert _located_error(failed(located, tool="disasm"), files)
    assert not _located_error(failed(), files)  # a compiler that died without a word
    assert not _located_error(failed(pb.Diagnostic(file="ptxas", severity="error")), files)
    assert not _located_error(failed(pb.Diagnostic(file="/usr/include/x.h", line=1,
                                                   severity="error")), files)
    assert not _located_error(failed(pb.Diagnostic(file="src/k.cu", line=3,
                                                   severity="warning")), files)


# -- against a real server ---------------------------------------------------------------------

VICTIM_CU = SAMPLE_CU.replace("scale", "victims_scale")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ToolServer, ToolClient]]:
    server, port = start_server(tmp_path_factory.mktemp("cache-server"), workers=1, preload=())
    with ToolClient(f"127.0.0.1:{port}", timeout_s=120) as client:
        yield server, client
    server.stop(grace_s=1)


@requires_bwrap
def test_a_failure_under_tiny_limits_does_not_poison_the_honest_call(
        served: tuple[ToolServer, ToolClient], caplog: pytest.LogCaptureFixture) -> None:
    server, client = served
    attack = cuda_request(VICTIM_CU, request_id="attacker")
    attack.limits.max_file_bytes = TINY_FILE_BYTES
    starved = client.run(attack)
    assert starved.status == pb.OUTPUT_LIMIT, pb.Status.Name(starved.status)
    assert not starved.compile.diagnostics  # the compiler died; nothing is said of the source
    assert not client.run(attack).cache_hit  # not stored even under its own key

    honest = client.run(cuda_request(VICTIM_CU, request_id="victims-secret-request-id"))
    assert honest.status == pb.OK and not honest.cache_hit, honest.summary
    caplog.set_level(logging.INFO, logger="perfbox.sandbox.service")
    again = client.run(cuda_request(VICTIM_CU, request_id="someone-else"))
    assert again.status == pb.OK and again.cache_hit
    assert again.request_id == "someone-else" and again.cached_from_job_id == honest.job_id
    assert b"victims-secret-request-id" not in again.SerializeToString()
    hit = [r for r in caplog.records if getattr(r, "cached_from_job_id", "") == honest.job_id]
    assert hit and hit[0].cached_from_request_id == "victims-secret-request-id"
    assert hit[0].cached_from_client == "anonymous" and hit[0].cached_at_unix > 0
    # and the attacker's tight limits never reach the honest entry either
    assert not client.run(attack).cache_hit


@requires_bwrap
def test_a_located_compile_error_is_stored(served: tuple[ToolServer, ToolClient]) -> None:
    _, client = served
    request = cuda_request("__global__ void located_error() { oops; }")
    first = client.run(request)
    assert first.status == pb.COMPILE_ERROR and first.compile.diagnostics[0].file == "k.cu"
    second = client.run(request)
    assert second.cache_hit and second.status == pb.COMPILE_ERROR


BAD_INLINE_PTX = """
__global__ void k(float* x) { asm volatile("not.a.ptx.instruction;"); x[0] = 1.0f; }
"""


@requires_bwrap
def test_an_unlocated_compile_error_is_not_stored(tmp_path: Path) -> None:
    """ptxas rejects the PTX nvcc made (inline assembly it cannot parse): its error names a
    temporary PTX file, not a submitted one, so the verdict is not stored; and a compile
    starved of file size is the limit's OUTPUT_LIMIT, stored neither."""
    server, port = start_server(tmp_path, workers=1, preload=())
    try:
        with ToolClient(f"127.0.0.1:{port}", timeout_s=120) as client:
            for _ in range(2):
                result = client.run(cuda_request(BAD_INLINE_PTX))
                assert result.status == pb.COMPILE_ERROR and not result.cache_hit, result.summary
                assert all(d.file != "k.cu" for d in result.compile.diagnostics)
            starved = cuda_request(VICTIM_CU)
            starved.limits.max_file_bytes = TINY_FILE_BYTES
            assert client.run(starved).status == pb.OUTPUT_LIMIT
            assert _on_disk(tmp_path / "cache") == set()
    finally:
        server.stop(grace_s=1)
