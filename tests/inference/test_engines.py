"""The engine registry: each entry's module offers require() and create(), implements the
protocol its kind names, and the CLI's --engine choices are the registry's."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from perfbox.inference import engine as protocols
from perfbox.inference import engines

PROTOCOL = {"step": protocols.Engine, "session": protocols.SessionEngine}
CLASSES = {"llama.cpp": "LlamaCppEngine", "vllm": "VllmSessions"}


def _members(protocol: type) -> set[str]:
    names = set(getattr(protocol, "__annotations__", {}))
    return names | {n for n in vars(protocol) if not n.startswith("_")}


@pytest.mark.parametrize("name", sorted(engines.ENGINES))
def test_each_engine_implements_the_protocol_of_its_kind(name: str) -> None:
    spec = engines.get(name)
    module = importlib.import_module(f"perfbox.inference.engines.{spec.module}")
    assert callable(module.require) and callable(module.create)
    cls = getattr(module, CLASSES[name])
    missing = {m for m in _members(PROTOCOL[spec.kind]) if not hasattr(cls, m)
               and m not in getattr(cls.__init__, "__code__").co_names}
    assert not missing, f"{cls.__name__} lacks {sorted(missing)}"


def test_an_unknown_engine_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown engine 'sglang'.*llama.cpp, vllm"):
        engines.get("sglang")


def test_engine_arguments_are_refused_by_an_engine_that_takes_none() -> None:
    with pytest.raises(ValueError, match="takes no engine arguments"):
        engines.create("llama.cpp", None, engine_args={"max_model_len": 8})


def test_the_cli_offers_the_registered_engines() -> None:
    out = subprocess.run([sys.executable, "-m", "perfbox.cli", "worker", "--help"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for name in engines.ENGINES:
        assert name in out.stdout
    assert "{llama.cpp,vllm}" in out.stdout.replace(" ", "").replace("\n", "")
