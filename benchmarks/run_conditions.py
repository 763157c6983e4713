"""What every results file records about the run that made it: the commit, the versions of the
packages the figures depend on, the machine, and its load (the machines are shared: a reader
must be able to tell a figure taken under load)."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return ""


def conditions(packages: tuple[str, ...] = ("perfbox", "torch")) -> dict[str, Any]:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    return {"commit": commit, **{name: version(name) for name in packages},
            "python": platform.python_version(), "kernel": platform.release(),
            "cpus": os.cpu_count(), "load_avg": list(os.getloadavg()), "host": platform.node()}
