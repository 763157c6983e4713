"""Length-prefixed JSON frames: how the server and its workers talk over pipes.

Hand-written rather than a library because it is a few lines and both ends are ours; a frame
is a 4-byte big-endian length then that many bytes of UTF-8 JSON.

Every frame is checked before anyone uses it: its length against the reader's bound, its JSON
against a nesting depth (a deeply nested document would exhaust the parser's recursion and
raise something other than a parse error), and it must be a JSON object. A reader that has
seen a bad frame has lost the stream's alignment: callers drop the channel (the worker is
restarted), they never read on from the same buffer.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any

MAX_FRAME_BYTES = 64 * 1024 * 1024  # a worker never sends more: results are bounded
MAX_DEPTH = 64  # nesting of objects and arrays in one frame
_HEADER = struct.Struct(">I")


class FrameError(RuntimeError):
    """The peer sent something that is not a frame (or too large or deep a frame)."""


def encode(message: dict[str, Any]) -> bytes:
    body = json.dumps(message, separators=(",", ":")).encode()
    if len(body) > MAX_FRAME_BYTES:
        raise FrameError(f"frame of {len(body)} bytes exceeds {MAX_FRAME_BYTES}")
    return _HEADER.pack(len(body)) + body


def write_frame(fd: int, message: dict[str, Any]) -> None:
    data = encode(message)
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _depth(body: bytes) -> int:
    """Deepest nesting of [ and { outside strings, without parsing (bounded work)."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


def decode(body: bytes) -> dict[str, Any]:
    """One frame's body as a dict, or FrameError saying why not."""
    if body.count(b"[") + body.count(b"{") > MAX_DEPTH and _depth(body) > MAX_DEPTH:
        raise FrameError(f"frame nests deeper than {MAX_DEPTH} levels")
    try:
        message = json.loads(body)
    except (ValueError, RecursionError) as e:
        raise FrameError(f"frame is not JSON: {e}") from e
    if not isinstance(message, dict):
        raise FrameError(f"frame is a JSON {type(message).__name__}, not an object")
    return message


class FrameReader:
    """Reassembles frames from arbitrary chunks of a byte stream, at most `max_bytes` each."""

    def __init__(self, max_bytes: int = MAX_FRAME_BYTES) -> None:
        self._buffer = bytearray()
        self.max_bytes = max_bytes

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        self._buffer += chunk
        messages = []
        while len(self._buffer) >= _HEADER.size:
            (length,) = _HEADER.unpack_from(self._buffer)
            if length > self.max_bytes:
                raise FrameError(f"frame of {length} bytes exceeds {self.max_bytes}")
            if len(self._buffer) < _HEADER.size + length:
                break
            body = bytes(self._buffer[_HEADER.size:_HEADER.size + length])
            del self._buffer[:_HEADER.size + length]
            messages.append(decode(body))
        return messages

    @property
    def buffered_bytes(self) -> int:
        return len(self._buffer)


def read_frame(fd: int, reader: FrameReader, pending: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Blocks until one frame is available on `fd`; None at EOF."""
    while not pending:
        chunk = os.read(fd, 65536)
        if not chunk:
            return None
        pending.extend(reader.feed(chunk))
    return pending.pop(0)
