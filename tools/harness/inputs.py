"""Input sets the submission cannot predict, from the problem's own distribution and a second.

Every draw seeds torch from the OS's CSPRNG (`secrets`), in the tool's process, after the
submission's process exists, so neither the seed nor the values are anywhere it can look.
KernelBench's `torch.rand` inputs are all positive, so `return x` passes ReLU on them; the
second distribution ("varied") flips the sign of each floating-point element at random and
scales each tensor by a random power of ten in [1e-1, 1e1], which keeps shapes, dtypes and
integer inputs (indices, sizes) as the problem made them. A problem whose reference cannot
take varied inputs (non-finite outputs where the problem's own gave finite ones, or an
exception) is checked on its own distribution only, and the report says so.
"""

from __future__ import annotations

import secrets
from typing import Any, Callable

PROBLEM = "problem"
VARIED = "varied"
DISTRIBUTIONS = (PROBLEM, VARIED)


def seed_torch() -> None:
    import torch

    torch.manual_seed(secrets.randbits(63))


def draw(get_inputs: Callable[[], Any], distribution: str = PROBLEM) -> list[Any]:
    """One input set: CPU tensors (or other values) from the problem, maybe varied."""
    import torch

    seed_torch()
    inputs = [x.detach().cpu() if isinstance(x, torch.Tensor) else x
              for x in list(get_inputs())]
    return vary(inputs) if distribution == VARIED else inputs


def vary(inputs: list[Any]) -> list[Any]:
    import torch

    out = []
    for x in inputs:
        if isinstance(x, torch.Tensor) and x.is_floating_point() and x.numel():
            sign = torch.randint(0, 2, x.shape, dtype=torch.int8).to(x.dtype) * 2 - 1
            scale = 10.0 ** (torch.rand(()).item() * 2 - 1)
            x = (x * sign * scale).to(x.dtype)
        out.append(x)
    return out


def distributions(options: dict[str, Any]) -> tuple[str, ...]:
    """Which distributions a check draws from: both unless the request opts out."""
    chosen = tuple(options.get("input_distributions") or DISTRIBUTIONS)
    return chosen
