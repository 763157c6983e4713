"""Moving values between the tool and a side process, and trusting none of what comes back.

Values go out with `torch.save` and come back through `torch.load(weights_only=True)`, which
rebuilds only plain tensors and containers: a tensor subclass, a lazy object or code from the
submission cannot come through. Every receive has a byte bound, so a side that writes garbage
on the channel is refused at once instead of being waited for.
"""

from __future__ import annotations

import io
from multiprocessing.connection import Connection
from typing import Any

MAX_MESSAGE_BYTES = 1 << 31
ERROR_PREFIX = b"error:"
READY = b"ready"
COMPILE_FAILED = "NVRTC compile error: "


class SideFailed(RuntimeError):
    """A side stopped answering, answered something else, or reported its own error."""


def dumps(obj: Any) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def loads(data: bytes) -> Any:
    """Rebuilds tensors and plain containers only: never runs code from the sender."""
    import torch

    return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")


def pipe_pair() -> tuple[Connection, Connection]:
    from multiprocessing import Pipe

    a, b = Pipe(duplex=True)
    return a, b


def flatten(value: Any) -> list[Any]:
    """Outputs in order: lists and tuples unpacked, dicts by sorted key."""
    if isinstance(value, (list, tuple)):
        return [x for item in value for x in flatten(item)]
    if isinstance(value, dict):
        return [x for key in sorted(value, key=str) for x in flatten(value[key])]
    return [value]


def plain(value: Any) -> Any:
    """A contiguous CPU copy of a tensor output; anything else is sent as is and judged by
    the tool (this runs in the side's process, so the tool trusts none of it)."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().cpu().contiguous()
    return value


def clone(value: Any) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, (list, tuple)):
        return type(value)(clone(v) for v in value)
    if isinstance(value, dict):
        return {k: clone(v) for k, v in value.items()}
    return value


def to_device(value: Any, device: str) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (list, tuple)):
        return type(value)(to_device(v, device) for v in value)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    return value


def error_text(frame: bytes) -> str:
    """The last line of a side's error frame (or a word on what came instead)."""
    if not frame.startswith(ERROR_PREFIX):
        return "answered something other than the protocol's reply"
    text = frame[len(ERROR_PREFIX):].decode(errors="replace").strip()
    return (text.splitlines() or ["(no message)"])[-1]


def receive(conn: Connection, max_bytes: int = MAX_MESSAGE_BYTES) -> tuple[Any | None, str]:
    """(payload, "") or (None, why the side failed). A message longer than max_bytes (an
    answer is about as large as the reference's output) is refused at once: the side wrote
    something of its own on the channel, and the tool must not wait for a body never sent."""
    try:
        data = conn.recv_bytes(max_bytes)
    except EOFError:
        return None, "the submission's process exited before answering"
    except OSError:
        return None, ("the submission wrote something other than its answer on the tool's "
                      "channel (a message longer than any output it could send)")
    if data.startswith(ERROR_PREFIX):
        text = data[len(ERROR_PREFIX):].decode(errors="replace").strip()
        if "CompileException:" in text:  # a bare kernel that NVRTC refused: keep its log
            return None, COMPILE_FAILED + text.split("CompileException:", 1)[1].strip()[:2000]
        return None, error_text(data)
    if data == READY:
        return data, ""
    try:
        return loads(data), ""
    except Exception as e:  # noqa: BLE001 - not plain tensors: a subclass, a lazy object, code
        return None, f"outputs are not plain tensors ({type(e).__name__})"


def ask(conn: Connection, message: bytes, max_bytes: int = MAX_MESSAGE_BYTES) -> bytes:
    """Sends a command and returns the raw reply; a dead side or an error reply raises."""
    try:
        conn.send_bytes(message)
        reply = conn.recv_bytes(max_bytes)
    except (EOFError, OSError) as e:
        raise SideFailed("its process exited or wrote something else on the channel") from e
    if reply.startswith(ERROR_PREFIX):
        raise SideFailed(error_text(reply))
    return reply


def receive_marker(conn: Connection, marker: bytes) -> str:
    """"" when the next message is `marker`, else what came instead (or why none came)."""
    try:
        data = conn.recv_bytes(1 << 20)
    except EOFError:
        return "its process exited"
    except OSError:
        return "it wrote something else on the channel"
    return "" if data == marker else error_text(data)
