"""Adapters are tested against the real framework packages. .ci/run installs each where it
installs on a CPU-only machine and sets its PERFBOX_REQUIRE_<NAME>: there a missing framework
fails the run instead of skipping."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest


def framework(module: str, require_env: str) -> ModuleType:
    """The framework's module; skips without it, or fails when $require_env is set."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        if os.environ.get(require_env):
            pytest.fail(f"{require_env} is set but {module} does not import: {e}")
        pytest.skip(f"{module} is not installed ({e}); set {require_env} to make this a failure",
                    allow_module_level=True)
