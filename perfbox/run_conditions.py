"""What every results file records about the run that made it: the commit, the versions of the
packages the figures depend on, the machine, and its load (the machines are shared: a reader
must be able to tell a figure taken under load). In the package so that `perfbox bench` and the
scripts in benchmarks/ record the same fields."""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]  # the checkout (no commit when installed)


def version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return ""


def conditions(packages: tuple[str, ...] = ("perfbox", "torch")) -> dict[str, Any]:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                                text=True).stdout.strip()
        # uncommitted changes to the code (results being written do not count): the
        # figures are not exactly that commit's
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no",
                                     "--", ".", ":!benchmarks/results"], cwd=REPO,
                                    capture_output=True, text=True).stdout.strip())
    except OSError:  # no git
        commit, dirty = "", False
    return {"commit": commit, "dirty": dirty, **{name: version(name) for name in packages},
            "python": platform.python_version(), "kernel": platform.release(),
            "cpus": os.cpu_count(), "load_avg": list(os.getloadavg()), "host": platform.node()}


def file_sha256(path: str | Path) -> str:
    """A model file's hash, so a reader knows which weights made a figure."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
