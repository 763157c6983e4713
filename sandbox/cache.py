"""Content-addressed result cache: the same deterministic call twice costs one run.

The key hashes everything that can change a result: tool, language, every source file (name and
content), the tool's options, and the toolkit identity (nvcc/ptxas/triton versions). Entries are
files named by the key, written atomically (temp file + rename) and checksummed, so a corrupted or
truncated entry is a miss (and is removed), never a wrong answer.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
_DIGEST_BYTES = 32
KEY_VERSION = "perfbox-cache-v1"  # bump when the key's inputs or the entry format change


def cache_key(tool: str, language: str, files: list[tuple[str, str]], options: dict[str, Any],
              toolkit: str) -> str:
    """Hex digest naming a call's result; options are canonical (sorted keys)."""
    h = hashlib.sha256()
    header = {"v": KEY_VERSION, "tool": tool, "language": language, "toolkit": toolkit,
              "options": options}
    h.update(json.dumps(header, sort_keys=True, separators=(",", ":")).encode())
    for name, content in files:
        for part in (name.encode(), content.encode()):
            h.update(len(part).to_bytes(8, "big"))
            h.update(part)
    return h.hexdigest()


class ResultCache:
    """Files under `directory`/ab/abcdef...; None directory disables caching."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self.hits = 0
        self.misses = 0
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            os.chmod(directory, 0o700)  # results may hold submissions' code: server-only

    def _path(self, key: str) -> Path:
        assert self.directory is not None
        return self.directory / key[:2] / key

    def get(self, key: str) -> bytes | None:
        if self.directory is None:
            return None
        path = self._path(key)
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            self.misses += 1
            return None
        except OSError as e:
            log.warning("cache read %s failed: %s", path, e)
            self.misses += 1
            return None
        digest, data = blob[:_DIGEST_BYTES], blob[_DIGEST_BYTES:]
        if len(digest) != _DIGEST_BYTES or hashlib.sha256(data).digest() != digest:
            log.warning("cache entry %s is corrupt; removing it", path)
            path.unlink(missing_ok=True)
            self.misses += 1
            return None
        self.hits += 1
        return data

    def put(self, key: str, data: bytes) -> None:
        if self.directory is None:
            return
        path = self._path(key)
        tmp = None
        try:
            path.parent.mkdir(exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as f:
                f.write(hashlib.sha256(data).digest() + data)
            os.replace(tmp, path)
        except OSError as e:  # a full disk costs a cache entry, never the result
            log.warning("cache write %s failed: %s", path, e)
            if tmp is not None:  # no half-written entry left behind
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
