"""Shared memory where the tool places a sample's inputs and a side leaves its outputs.

One memfd per side, created by the tool after the side is forked and handed over on the pipe
(SCM_RIGHTS), mapped by both. For a sample of N calls the region holds N input sets and N
output sets, laid out from the reference's first input and output (shapes and dtypes fixed for
the whole bench). The tool writes fresh inputs while the side is frozen, the side's call `i`
reads input set `i` and copies its outputs into output set `i`, and the tool reads the outputs
it chose to verify while the side is frozen again: the outputs judged are those of the timed
calls, in memory the tool reads directly, not a report from the side.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass
from typing import Any

ALIGN_BYTES = 64
MAX_REGION_BYTES = 1 << 30  # per side: bounds N x (input + output bytes)


@dataclass(frozen=True)
class TensorSpec:
    """Shape and dtype of one tensor in a call's inputs or outputs."""

    shape: tuple[int, ...]
    dtype: str  # torch dtype name without "torch."

    @property
    def num_bytes(self) -> int:
        import torch

        size = torch.empty((), dtype=getattr(torch, self.dtype)).element_size()
        count = 1
        for d in self.shape:
            count *= d
        return size * count


@dataclass(frozen=True)
class Layout:
    """Where call i's inputs and outputs live in the region (plain data: sent to the side)."""

    inputs: tuple[TensorSpec | None, ...]  # None: a non-tensor argument, passed as `constants`
    constants: tuple[Any, ...]  # the non-tensor arguments, by position (None for tensors)
    outputs: tuple[TensorSpec, ...]
    num_calls: int  # N: call sets in the region

    @property
    def call_bytes(self) -> int:
        return sum(_aligned(s.num_bytes) for s in (*self.inputs, *self.outputs) if s)

    @property
    def region_bytes(self) -> int:
        return max(ALIGN_BYTES, self.call_bytes * self.num_calls)

    def to_plain(self) -> dict[str, Any]:
        return {"inputs": [None if s is None else (list(s.shape), s.dtype) for s in self.inputs],
                "constants": list(self.constants),
                "outputs": [(list(s.shape), s.dtype) for s in self.outputs],
                "num_calls": self.num_calls}

    @classmethod
    def from_plain(cls, data: dict[str, Any]) -> "Layout":
        return cls(tuple(None if s is None else TensorSpec(tuple(int(d) for d in s[0]), str(s[1]))
                         for s in data["inputs"]),
                   tuple(data["constants"]),
                   tuple(TensorSpec(tuple(int(d) for d in s[0]), str(s[1]))
                         for s in data["outputs"]),
                   int(data["num_calls"]))


def _aligned(n: int) -> int:
    return (n + ALIGN_BYTES - 1) // ALIGN_BYTES * ALIGN_BYTES


def spec_of(t: Any) -> TensorSpec:
    return TensorSpec(tuple(t.shape), str(t.dtype).removeprefix("torch."))


class Region:
    """The mapped region, viewed as per-call tensors (the same code on both ends)."""

    def __init__(self, fd: int, layout: Layout) -> None:
        import torch

        self.layout = layout
        self._map = mmap.mmap(fd, layout.region_bytes)
        raw = torch.frombuffer(self._map, dtype=torch.uint8)
        self.inputs: list[list[Any]] = []
        self.outputs: list[list[Any]] = []
        offset = 0
        for _ in range(layout.num_calls):
            call_in: list[Any] = []
            for spec, constant in zip(layout.inputs, layout.constants):
                if spec is None:
                    call_in.append(constant)
                    continue
                call_in.append(_view(raw, offset, spec))
                offset += _aligned(spec.num_bytes)
            call_out = []
            for spec in layout.outputs:
                call_out.append(_view(raw, offset, spec))
                offset += _aligned(spec.num_bytes)
            self.inputs.append(call_in)
            self.outputs.append(call_out)

    def close(self) -> None:
        self.inputs, self.outputs = [], []
        try:
            self._map.close()
        except BufferError:  # a view is still alive somewhere; the mapping goes with the process
            pass


def _view(raw: Any, offset: int, spec: TensorSpec) -> Any:
    import torch

    dtype = getattr(torch, spec.dtype)
    return raw[offset:offset + spec.num_bytes].view(dtype).view(spec.shape)


def new_region_fd(num_bytes: int) -> int:
    fd = os.memfd_create("perfbox-slots", os.MFD_CLOEXEC)
    os.ftruncate(fd, max(ALIGN_BYTES, num_bytes))
    return fd
