"""The command loop a side runs: the same code in the reference's and the submission's process.

In the submission's process this loop is the submission's to replace, and nothing depends on
it running as written: a check answer is judged by the tool, a timed sample is timed by the
tool's clock between thaw and freeze and judged by the outputs the tool finds in the shared
region. It exists so an honest submission and the reference pay the same per-call cost.

Commands (bytes): ``check:`` + input set -> both runs' outputs (determinism); ``slots:`` +
layout, then the region's descriptor -> ok; ``go:N`` -> N (0 or 1) calls on the region's input
set, the call's outputs kept alive and their addresses written to the region's header -> done;
GPU path: ``pool:`` + input sets, ``out:J``, ``timed:`` + set indices, ``last``,
``flush_bytes``; ``done`` ends the loop.
"""

from __future__ import annotations

from multiprocessing.connection import Connection
from typing import Any, Callable

from perfbox.tools.harness import wire


def serve(conn: Connection, fn: Callable[..., Any], request: dict[str, Any]) -> None:
    """Serves commands until "done". Python's collector is emptied and frozen first, in both
    sides alike: each side inherits the tool's object graph as it was when it was forked, and
    collections traversing two different graphs made identical kernels 6% apart."""
    import gc

    import torch

    gc.collect()
    gc.freeze()

    device = str(request.get("device", "cpu"))
    timer = request.get("_timer")
    state: dict[str, Any] = {"region": None, "pool": [[]], "last": None}
    while True:
        message = conn.recv_bytes(wire.MAX_MESSAGE_BYTES)
        if message == b"done":
            return
        with torch.no_grad():
            reply = _command(conn, message, fn, device, timer, state)
        conn.send_bytes(reply)


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()  # the whole device: side streams count


def _outputs(value: Any) -> list[Any]:
    return [wire.plain(t) for t in wire.flatten(value)]


def _command(conn: Connection, message: bytes, fn: Callable[..., Any], device: str,
             timer: Any, state: dict[str, Any]) -> bytes:
    import torch

    from perfbox.tools import gpu_timing

    if message.startswith(b"go:"):
        region = state["region"]
        kept: list[Any] = []
        for _ in range(int(message[3:])):  # 0 (an empty window) or 1
            kept = [t.contiguous() if isinstance(t, torch.Tensor) else t  # views materialised
                    for t in wire.flatten(fn(*region.arguments()))]
        _sync(device)
        state["kept"] = kept  # alive until the next call: the tool reads them from here
        for k, value in enumerate(kept[:len(region.header)]):
            if isinstance(value, torch.Tensor):
                region.header[k, 0] = value.data_ptr()
                region.header[k, 1] = value.numel() * value.element_size()
        return b"done"
    if message.startswith(b"check:"):
        inputs = wire.to_device(wire.loads(message[6:]), device)
        runs = []
        for _ in range(2):  # twice: a deterministic kernel answers the same both times
            out = fn(*wire.clone(inputs))
            _sync(device)
            runs.append(_outputs(out))
        return wire.dumps(runs)
    if message.startswith(b"slots:"):
        from multiprocessing.reduction import recv_handle

        from perfbox.tools.harness.slots import Layout, Region

        layout = Layout.from_plain(wire.loads(message[6:]))
        fd = recv_handle(conn)
        if state["region"] is not None:
            state["region"].close()
        state["region"] = Region(fd, layout)
        return b"ok"
    if message.startswith(b"pool:"):
        state["pool"] = [wire.to_device(inputs, device) for inputs in wire.loads(message[5:])]
        return b"ok"
    if message.startswith(b"out:"):
        out = fn(*wire.clone(state["pool"][int(message[4:])]))
        _sync(device)
        return wire.dumps(_outputs(out))
    if message.startswith(b"timed:") and timer is not None:
        times = []
        for j in message[6:]:
            args = wire.clone(state["pool"][j])
            event_us, host_us, state["last"] = timer.time_call(lambda a=args: fn(*a))
            times.append((event_us, host_us))
        return gpu_timing.pack_times(times)
    if message == b"flush_bytes" and timer is not None:
        return b"%d" % timer.flush_bytes
    if message == b"last":
        return wire.dumps(_outputs(state["last"]))
    return wire.ERROR_PREFIX + b"unknown command"
