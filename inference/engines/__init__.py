"""The rollout worker's engines, by name: llama.cpp (embedded default, CPU) and, on GPU nodes,
vLLM. The CLI's `--engine` choices, their help and the checks before anything starts come from
`ENGINES`; an engine module is imported only when it is used (vLLM and llama.cpp are optional).

An engine module offers `require()` (raises EngineUnavailable saying what to install) and
`create(model, num_slots=..., threads=..., engine_args=...)`, which returns a step engine
(perfbox.inference.engine.Engine: perfbox batches it) or a session engine (SessionEngine: it
batches itself), as its entry's `kind` says. Adding an engine: its module here, an entry in
`ENGINES`, and a test.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Literal


class EngineUnavailable(RuntimeError):
    """An engine's package or model is missing; the message says what to install."""


@dataclass(frozen=True)
class EngineSpec:
    """One engine as the worker and the CLI know it."""

    name: str  # the --engine value
    kind: Literal["step", "session"]  # perfbox batches it (Engine) or it batches itself
    module: str  # perfbox.inference.engines.<module> holds require() and create()
    description: str  # one line for --help
    needs_model: bool  # --model is required (no bundled default)


ENGINES: dict[str, EngineSpec] = {
    spec.name: spec
    for spec in (
        EngineSpec("llama.cpp", "step", "llama_cpp", "embedded, CPU; SmolLM2-135M by default",
                   needs_model=False),
        EngineSpec("vllm", "session", "vllm_sessions",
                   "GPU nodes; needs pip install 'perfbox[vllm]' and --model", needs_model=True),
    )
}
DEFAULT_ENGINE = "llama.cpp"


def get(name: str) -> EngineSpec:
    """The engine's spec, or an error naming the engines there are."""
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; choose one of: {', '.join(ENGINES)}")
    return ENGINES[name]


def _module(name: str) -> Any:
    return importlib.import_module(f"perfbox.inference.engines.{get(name).module}")


def require(name: str) -> None:
    """Raises EngineUnavailable (what to install) when the engine cannot start here."""
    _module(name).require()


def create(name: str, model: str | None, *, num_slots: int = 8, threads: int = 1,
           engine_args: dict[str, Any] | None = None) -> Any:
    """A new engine: a step engine with num_slots KV streams, or a session engine with
    engine_args (vLLM: AsyncEngineArgs fields)."""
    return _module(name).create(model, num_slots=num_slots, threads=threads,
                                engine_args=dict(engine_args or {}))


__all__ = ["DEFAULT_ENGINE", "ENGINES", "EngineSpec", "EngineUnavailable", "create", "get",
           "require"]
