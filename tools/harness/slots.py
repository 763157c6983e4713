"""Shared memory where the tool places a call's inputs, and where a side says where its outputs
are.

One memfd per side, created by the tool after the side is forked and handed over on the pipe
(SCM_RIGHTS), mapped by both: the input set of a call (laid out from the reference's first
input: shapes and dtypes fixed for the whole bench) and a header of (address, bytes) per
output. The tool writes fresh inputs while the side is frozen; the side's call reads them and
leaves its outputs wherever they are in its own memory, writing only their addresses; the tool
reads the outputs it verifies *from the side's memory* (/proc/PID/mem) while the side is frozen
again. Nothing is copied in either side's timed window, so no side can skip a copy the other
pays (a submission computing straight into a shared output slot once looked 1.8x faster than
an identical kernel), and what is judged is the memory the timed call wrote, not a report.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass
from typing import Any

ALIGN_BYTES = 64
MEMFD_NAME = "perfbox-slots"  # how the region shows in /proc/PID/maps
HEADER_ENTRY_BYTES = 16  # per output: its address and its size in bytes, two int64


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
    """What the region holds: one call's input set and a header entry per output (plain data:
    sent to the side). One input set only: a side sees no input but the call being timed."""

    inputs: tuple[TensorSpec | None, ...]  # per leaf of the arguments; None: not a tensor
    constants: tuple[Any, ...]  # the non-tensor leaves, by position (None for tensors)
    tree: str  # how the leaves nest into the call's arguments (torch pytree spec, JSON)
    outputs: tuple[TensorSpec, ...]  # what the reference returns (the header has one entry each)

    @property
    def input_bytes(self) -> int:
        return sum(_aligned(s.num_bytes) for s in self.inputs if s)

    @property
    def header_bytes(self) -> int:
        return _aligned(HEADER_ENTRY_BYTES * max(1, len(self.outputs)))

    @property
    def region_bytes(self) -> int:
        return max(ALIGN_BYTES, self.input_bytes + self.header_bytes)

    def to_plain(self) -> dict[str, Any]:
        return {"inputs": [None if s is None else (list(s.shape), s.dtype) for s in self.inputs],
                "constants": list(self.constants), "tree": self.tree,
                "outputs": [(list(s.shape), s.dtype) for s in self.outputs]}

    @classmethod
    def from_plain(cls, data: dict[str, Any]) -> "Layout":
        return cls(tuple(None if s is None else TensorSpec(tuple(int(d) for d in s[0]), str(s[1]))
                         for s in data["inputs"]),
                   tuple(data["constants"]), str(data["tree"]),
                   tuple(TensorSpec(tuple(int(d) for d in s[0]), str(s[1]))
                         for s in data["outputs"]))


def _aligned(n: int) -> int:
    return (n + ALIGN_BYTES - 1) // ALIGN_BYTES * ALIGN_BYTES


def spec_of(t: Any) -> TensorSpec:
    return TensorSpec(tuple(t.shape), str(t.dtype).removeprefix("torch."))


class Region:
    """The mapped region, viewed as tensors (the same code on both ends)."""

    def __init__(self, fd: int, layout: Layout) -> None:
        import torch
        from torch.utils import _pytree  # the structure of nested arguments (GPU MODE data)

        self.layout = layout
        self._tree = _pytree.treespec_loads(layout.tree)
        self._unflatten = _pytree.tree_unflatten
        self._map = mmap.mmap(fd, layout.region_bytes)
        raw = torch.frombuffer(self._map, dtype=torch.uint8)
        self.leaves: list[Any] = []  # the input set's leaves: tensor views, or constants
        offset = 0
        for spec, constant in zip(layout.inputs, layout.constants):
            if spec is None:
                self.leaves.append(constant)
                continue
            self.leaves.append(_view(raw, offset, spec))
            offset += _aligned(spec.num_bytes)
        # (address, bytes) of each output of the last call, written by the side
        self.header = _view(raw, offset, TensorSpec((max(1, len(layout.outputs)), 2), "int64"))

    def arguments(self) -> list[Any]:
        """The call's arguments, nested as the problem's were."""
        return self._unflatten(self.leaves, self._tree)

    def close(self) -> None:
        self.leaves = []
        self.header = None
        try:
            self._map.close()
        except BufferError:  # a view is still alive somewhere; the mapping goes with the process
            pass


def _view(raw: Any, offset: int, spec: TensorSpec) -> Any:
    import torch

    dtype = getattr(torch, spec.dtype)
    return raw[offset:offset + spec.num_bytes].view(dtype).view(spec.shape)


def new_region_fd(num_bytes: int) -> int:
    fd = os.memfd_create(MEMFD_NAME, os.MFD_CLOEXEC)
    os.ftruncate(fd, max(ALIGN_BYTES, num_bytes))
    return fd
