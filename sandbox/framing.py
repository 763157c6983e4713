"""Length-prefixed JSON frames: how the server and its workers talk over pipes.

Hand-written rather than a library because it is eight lines and both ends are ours; a frame
is a 4-byte big-endian length then that many bytes of UTF-8 JSON.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any

MAX_FRAME_BYTES = 64 * 1024 * 1024  # a worker never sends more: results are bounded
_HEADER = struct.Struct(">I")


class FrameError(RuntimeError):
    """The peer sent something that is not a frame (or too large a frame)."""


def encode(message: dict[str, Any]) -> bytes:
    body = json.dumps(message, separators=(",", ":")).encode()
    return _HEADER.pack(len(body)) + body


def write_frame(fd: int, message: dict[str, Any]) -> None:
    data = encode(message)
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class FrameReader:
    """Reassembles frames from arbitrary chunks of a byte stream."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        self._buffer += chunk
        messages = []
        while len(self._buffer) >= _HEADER.size:
            (length,) = _HEADER.unpack_from(self._buffer)
            if length > MAX_FRAME_BYTES:
                raise FrameError(f"frame of {length} bytes exceeds {MAX_FRAME_BYTES}")
            if len(self._buffer) < _HEADER.size + length:
                break
            body = bytes(self._buffer[_HEADER.size:_HEADER.size + length])
            del self._buffer[:_HEADER.size + length]
            try:
                messages.append(json.loads(body))
            except ValueError as e:
                raise FrameError(f"frame is not JSON: {e}") from e
        return messages


def read_frame(fd: int, reader: FrameReader, pending: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Blocks until one frame is available on `fd`; None at EOF."""
    while not pending:
        chunk = os.read(fd, 65536)
        if not chunk:
            return None
        pending.extend(reader.feed(chunk))
    return pending.pop(0)
