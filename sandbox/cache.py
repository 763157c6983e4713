"""Content-addressed result cache: the same deterministic call twice costs one run.

The key hashes everything that can change a result: tool, language, every source file (name and
content), the tool's options, the toolkit identity (nvcc/ptxas/triton versions), the request's
effective limits and the isolation backend. Limits are in the key because a call under a tiny
limit fails where the same call under the defaults succeeds: without them, anyone could store a
failure under the key of someone else's source (cache poisoning across tenants).

Entries are files named by the key, written atomically (temp file + rename) and checksummed, so a
corrupted or truncated entry is a miss (and is removed), never a wrong answer. Each entry records
its origin (the job, request and client that produced it, and when) for the server's log.

The cache is bounded: an in-memory index, in least-recently-used order, is built from the
entries' mtimes on start; a hit refreshes the entry's mtime; a put evicts the least recently used
entries until the total is within `max_bytes`. Several servers may share a directory: each evicts
only what its own index knows, and an entry another one removed is simply a miss.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import logging
import os
import re
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
_DIGEST_BYTES = 32
_ORIGIN_LEN_BYTES = 4
_ENTRY_NAME = re.compile(r"^[0-9a-f]{64}$")
KEY_VERSION = "perfbox-cache-v2"  # bump when the key's inputs or the entry format change
DEFAULT_MAX_BYTES = 1 << 30  # 1 GiB of entries per server


def cache_key(tool: str, language: str, files: list[tuple[str, str]], options: dict[str, Any],
              toolkit: str, *, limits: dict[str, int], backend: str) -> str:
    """Hex digest naming a call's result; options and limits are canonical (sorted keys).

    `limits` and `backend` are keyword-only and required: leaving either out is how a failure
    under one caller's limits (or one sandbox) was served to another caller."""
    h = hashlib.sha256()
    header = {"v": KEY_VERSION, "tool": tool, "language": language, "toolkit": toolkit,
              "options": options, "limits": limits, "backend": backend}
    h.update(json.dumps(header, sort_keys=True, separators=(",", ":")).encode())
    for name, content in files:
        for part in (name.encode(), content.encode()):
            h.update(len(part).to_bytes(8, "big"))
            h.update(part)
    return h.hexdigest()


@dataclass(frozen=True)
class Origin:
    """Which call produced an entry: logged on a hit, so a cached answer can be traced back."""

    job_id: str  # the job that ran
    request_id: str  # the producing client's own request id (never shown to another client)
    client: str  # the producing client's id from the gate (never shown to another client)
    created_unix: float  # when the entry was stored (seconds since the epoch)


@dataclass(frozen=True)
class CacheEntry:
    """What a hit returns."""

    data: bytes  # the stored result, as given to put()
    origin: Origin


def _encode(data: bytes, origin: Origin) -> bytes:
    """digest(32) | origin length (4, big-endian) | origin JSON | data; the digest covers all."""
    meta = json.dumps(asdict(origin), sort_keys=True).encode()
    body = len(meta).to_bytes(_ORIGIN_LEN_BYTES, "big") + meta + data
    return hashlib.sha256(body).digest() + body


def _decode(blob: bytes) -> CacheEntry | None:
    """The entry in `blob`, or None when it is truncated, corrupted or of another format."""
    digest, body = blob[:_DIGEST_BYTES], blob[_DIGEST_BYTES:]
    if len(digest) != _DIGEST_BYTES or hashlib.sha256(body).digest() != digest:
        return None
    size = int.from_bytes(body[:_ORIGIN_LEN_BYTES], "big")
    meta = body[_ORIGIN_LEN_BYTES:_ORIGIN_LEN_BYTES + size]
    try:
        origin = Origin(**json.loads(meta))
    except (ValueError, TypeError):
        return None
    return CacheEntry(body[_ORIGIN_LEN_BYTES + size:], origin)


class ResultCache:
    """Files under `directory`/ab/abcdef...; None directory disables caching."""

    def __init__(self, directory: Path | None, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()
        # key -> entry size in bytes, least recently used first
        self._index: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._total = 0  # sum of the index's sizes
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            os.chmod(directory, 0o700)  # results may hold submissions' code: server-only
            self._load_index()

    @property
    def total_bytes(self) -> int:
        """Bytes of the entries this cache knows of."""
        with self._lock:
            return self._total

    def _path(self, key: str) -> Path:
        assert self.directory is not None
        return self.directory / key[:2] / key

    def _load_index(self) -> None:
        """Indexes the entries already on disk, oldest mtime first; trims them to max_bytes."""
        assert self.directory is not None
        found: list[tuple[float, str, int]] = []
        for path in self.directory.glob("??/*"):
            if not _ENTRY_NAME.match(path.name) or path.parent.name != path.name[:2]:
                continue  # temp files and anything not written by this cache
            with contextlib.suppress(OSError):
                st = path.stat()
                found.append((st.st_mtime, path.name, st.st_size))
        with self._lock:
            for _, key, size in sorted(found):
                self._index[key] = size
                self._total += size
            self._evict()

    def _forget(self, key: str) -> None:
        """Drops `key` from the index. Call with the lock held."""
        self._total -= self._index.pop(key, 0)

    def _touch(self, key: str, size: int) -> None:
        """Records `key` as the most recently used entry. Call with the lock held."""
        self._forget(key)
        self._index[key] = size
        self._total += size

    def _evict(self) -> None:
        """Removes least-recently-used entries until the total fits. Call with the lock held."""
        while self._total > self.max_bytes and self._index:
            key, size = self._index.popitem(last=False)
            self._total -= size
            try:
                self._path(key).unlink(missing_ok=True)
            except OSError as e:
                log.warning("cache eviction of %s failed: %s", key, e)

    def _miss(self, key: str) -> None:
        with self._lock:
            self._forget(key)
            self.misses += 1

    def get(self, key: str) -> CacheEntry | None:
        if self.directory is None:
            return None
        path = self._path(key)
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            self._miss(key)  # never stored, or evicted by a server sharing the directory
            return None
        except OSError as e:
            log.warning("cache read %s failed: %s", path, e)
            self._miss(key)
            return None
        entry = _decode(blob)
        if entry is None:
            log.warning("cache entry %s is corrupt; removing it", path)
            path.unlink(missing_ok=True)
            self._miss(key)
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # the LRU order survives a restart
        with self._lock:
            self._touch(key, len(blob))
            self.hits += 1
        return entry

    def put(self, key: str, data: bytes, origin: Origin) -> None:
        if self.directory is None:
            return
        path = self._path(key)
        blob = _encode(data, origin)
        tmp = None
        try:
            path.parent.mkdir(exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
            os.replace(tmp, path)
        except OSError as e:  # a full disk costs a cache entry, never the result
            log.warning("cache write %s failed: %s", path, e)
            if tmp is not None:  # no half-written entry left behind
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            return
        with self._lock:
            self._touch(key, len(blob))
            self._evict()
