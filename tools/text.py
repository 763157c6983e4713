"""Bounded text: everything that reaches a model or a log is capped, head and tail kept.

Compiler errors sit at the top of an output and the final summary at the bottom, so both ends
are worth keeping; the middle is replaced by a marker saying how much was dropped.
"""

from __future__ import annotations

ELISION_MARKER = "\n[... {n} bytes elided ...]\n"


def bound_text(text: str, max_bytes: int) -> str:
    """Returns `text` if it fits in `max_bytes` (UTF-8), else its head and tail around a marker."""
    data = text.encode("utf-8", errors="replace")
    return bound_bytes(data, max_bytes)


def bound_bytes(data: bytes, max_bytes: int) -> str:
    """Decodes `data`, keeping at most `max_bytes` of it as head + tail around a marker."""
    if len(data) <= max_bytes:
        return data.decode("utf-8", errors="replace")
    head = max_bytes // 2
    tail = max_bytes - head
    elided = len(data) - head - tail
    return (
        data[:head].decode("utf-8", errors="replace")
        + ELISION_MARKER.format(n=elided)
        + data[len(data) - tail :].decode("utf-8", errors="replace")
    )


class HeadTailBuffer:
    """Accumulates a stream keeping only its first and last `keep_bytes // 2` bytes.

    Memory stays bounded however much a job prints; `total_bytes` counts everything seen so the
    output limit can be enforced on the real volume.
    """

    def __init__(self, keep_bytes: int) -> None:
        self.keep_bytes = keep_bytes
        self.head = bytearray()
        self.tail = bytearray()
        self.total_bytes = 0

    def write(self, chunk: bytes) -> None:
        self.total_bytes += len(chunk)
        half = self.keep_bytes // 2
        room = half - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self.tail += chunk
            if len(self.tail) > self.keep_bytes - half:
                del self.tail[: len(self.tail) - (self.keep_bytes - half)]

    def text(self) -> str:
        elided = self.total_bytes - len(self.head) - len(self.tail)
        head = bytes(self.head).decode("utf-8", errors="replace")
        tail = bytes(self.tail).decode("utf-8", errors="replace")
        if elided <= 0:
            return head + tail
        return head + ELISION_MARKER.format(n=elided) + tail
