"""Target architectures: parsing "sm_90"-style names and checking them against the toolkit."""

from __future__ import annotations

import functools
import re
import subprocess

from perfbox.tools.toolkit import find_binary
from perfbox.tools.types import ToolInputError

DEFAULT_ARCH = "sm_90"
_ARCH_RE = re.compile(r"^sm_(\d{2,3})([af]?)$")
# Used when nvcc is absent (Triton-only nodes): the archs CUDA 12/13 and Triton target.
_FALLBACK_ARCHS = frozenset(
    ["sm_75", "sm_80", "sm_86", "sm_87", "sm_89", "sm_90", "sm_90a", "sm_100", "sm_100a",
     "sm_100f", "sm_103", "sm_103a", "sm_110", "sm_110a", "sm_120", "sm_120a", "sm_121",
     "sm_121a"]
)


@functools.lru_cache(maxsize=1)
def supported_archs() -> frozenset[str]:
    """The real-architecture names this node's nvcc can target."""
    nvcc = find_binary("nvcc")
    if not nvcc:
        return _FALLBACK_ARCHS
    try:
        out = subprocess.run([nvcc, "--list-gpu-code"], capture_output=True, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return _FALLBACK_ARCHS
    archs = {line.strip() for line in out.splitlines() if _ARCH_RE.match(line.strip())}
    return frozenset(archs) or _FALLBACK_ARCHS


def capability(arch: str) -> int:
    """"sm_90a" -> 90: the number Triton's GPUTarget takes."""
    match = _ARCH_RE.match(arch)
    if not match:
        raise ToolInputError(f"arch {arch!r} is not of the form sm_XY (e.g. sm_90, sm_80)")
    return int(match.group(1))


def validate_archs(archs: list[str]) -> list[str]:
    """Returns the archs to build (default sm_90) or raises naming the supported ones."""
    if not archs:
        return [DEFAULT_ARCH]
    supported = supported_archs()
    for arch in archs:
        capability(arch)
        if arch not in supported:
            raise ToolInputError(
                f"arch {arch!r} is not supported by this node's toolkit; "
                f"use one of: {', '.join(sorted(supported))}"
            )
    return list(dict.fromkeys(archs))
