"""Finds the CUDA tools a job uses and says which versions they are.

nvcc comes from the machine's CUDA toolkit (or the `nvidia-cuda-nvcc` wheel); cuobjdump and
nvdisasm come from the `nvidia-cuda-cuobjdump`/`nvidia-cuda-nvdisasm` wheels, or from the toolkit,
or from the copies Triton ships. The identity string goes into every result and every cache key,
so a toolkit upgrade never serves stale results.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ToolBinary:
    """A located executable and its version ("" when absent)."""

    name: str
    path: str  # absolute path; "" when not found
    version: str  # e.g. "13.0.88"; "" when not found


def _candidate_dirs() -> list[Path]:
    dirs: list[Path] = []
    for env in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(env):
            dirs.append(Path(os.environ[env]) / "bin")
    site = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = site / "site-packages"
    for sub in ("nvidia/cu13/bin", "nvidia/cuda_nvcc/bin", "nvidia/cuda_cuobjdump/bin",
                "nvidia/cuda_nvdisasm/bin", "nvidia/cu12/bin"):
        dirs.append(site / sub)
    dirs.append(Path("/usr/local/cuda/bin"))
    dirs.append(site / "triton/backends/nvidia/bin")
    return dirs


@functools.lru_cache(maxsize=None)
def find_binary(name: str) -> str:
    """Absolute path of a CUDA executable, or "" when none is installed."""
    on_path = shutil.which(name)
    if on_path:
        return on_path
    for directory in _candidate_dirs():
        candidate = directory / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return ""


_VERSION_RE = re.compile(r"V(\d+\.\d+\.\d+)|release (\d+\.\d+)")


@functools.lru_cache(maxsize=None)
def binary(name: str) -> ToolBinary:
    path = find_binary(name)
    if not path:
        return ToolBinary(name, "", "")
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ToolBinary(name, path, "")
    match = _VERSION_RE.search(out.stdout + out.stderr)
    version = (match.group(1) or match.group(2)) if match else ""
    return ToolBinary(name, path, version)


def python_package_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return ""


def toolchain() -> list[ToolBinary]:
    """Everything a tool may call, located and versioned."""
    found = [binary(n) for n in ("nvcc", "ptxas", "cuobjdump", "nvdisasm", "ncu", "nsys",
                                 "compute-sanitizer")]
    for dist in ("triton", "torch"):
        found.append(ToolBinary(dist, "", python_package_version(dist)))
    return found


@functools.lru_cache(maxsize=1)
def identity() -> str:
    """One line naming the toolkit versions; part of every cache key."""
    parts = [f"{t.name} {t.version}" for t in toolchain() if t.version]
    return "; ".join(parts) or "no CUDA toolkit"
