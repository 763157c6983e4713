"""The two engine interfaces the rollout worker drives.

`Engine` (a *step* engine; llama.cpp): perfbox batches. A sequence lives in a slot of the
engine's KV cache. The worker starts it, feeds it tokens (a prompt or a tool's output: *delta
prefill*, only the new tokens), decodes it one token per step batched with every other
sequence, keeps it resident while its tool runs, forks it for the samples of a group and drops
it. `step` is the one batched forward pass: each input carries the
tokens to add to one sequence (one for decode, many for prefill) and whether the caller wants
the next token after them. perfbox.inference.rollout drives it.

`SessionEngine` (vLLM): the engine batches and schedules itself; perfbox holds one streaming
session per trajectory (its KV kept between turns) or sends fresh requests (resubmit).
perfbox.inference.session_rollout drives it.

An engine implements one of them, and perfbox.inference.engines registers it by name.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from perfbox.inference.chat_format import ChatFormat


@dataclass
class StepInput:
    """Tokens to append to one sequence in this forward pass."""

    seq_id: int
    tokens: list[int]  # 1 for a decode step, more for (chunked) prefill
    want_next: bool = True  # compute the next token after the last one
    temperature: float = 0.0  # 0: greedy; above: sample from softmax(logits / temperature)
    seed: int = 0  # sampling: the draw depends only on (seed, position, logits)
    top_p: float = 1.0  # nucleus: keep the most likely tokens up to this mass
    top_k: int = 0  # keep only the k most likely tokens (0: all)


@dataclass
class StepOutput:
    """What one forward pass produced."""

    next_tokens: dict[int, int] = field(default_factory=dict)  # seq_id -> next token
    # seq_id -> log-probability of next_tokens[seq_id] under the distribution it was drawn
    # from (perfbox.inference.sampling), computed in the same pass
    logprobs: dict[int, float] = field(default_factory=dict)
    num_prefill_tokens: int = 0  # tokens of inputs with more than one token
    num_decode_tokens: int = 0  # tokens of single-token inputs
    elapsed_s: float = 0.0  # wall time of the forward pass


class Engine(Protocol):
    """A step engine (llama.cpp on the CPU): sequences in KV slots, one batched forward pass
    at a time."""

    name: str
    num_slots: int  # sequences that can hold KV at once
    max_tokens_per_seq: int  # context length of one sequence
    max_batch_tokens: int  # tokens one step may take in all
    n_vocab: int  # the vocabulary's size (token ids are below it)

    def tokenize(self, text: str, special: bool = True) -> list[int]:
        """Tokens of text; special tokens (chat template markers) are parsed, unless special
        is False: then a marker's text is plain text (a tool's output cannot open a turn)."""
        ...

    def piece(self, token: int) -> bytes:
        """The bytes of one token (a streamed piece may end inside a UTF-8 character)."""
        ...

    def detokenize(self, tokens: list[int]) -> str:
        ...

    def eos_tokens(self) -> set[int]:
        ...

    def chat_format(self) -> ChatFormat:
        """The model's own chat template."""
        ...

    def start(self, seq_id: int | None = None) -> int:
        """Slot seq_id (or a free slot) with empty KV; its seq_id. RuntimeError when none is
        free."""
        ...

    def adopt(self, seq_id: int, num_tokens: int) -> None:
        """Takes slot seq_id back with the first num_tokens of KV it was dropped with
        (drop(keep_kv=True)): a prefix-cache entry becomes a running sequence again."""
        ...

    def length(self, seq_id: int) -> int:
        """Tokens held in the sequence's KV."""
        ...

    def truncate(self, seq_id: int, num_tokens: int) -> None:
        """Keep the first num_tokens of the sequence's KV (prefix reuse)."""
        ...

    def fork(self, seq_id: int, child: int | None = None) -> int:
        """A new sequence (in slot `child`, or any free one) sharing (a copy of) this one's KV:
        the samples of a group prefill their prompt once."""
        ...

    def drop(self, seq_id: int, keep_kv: bool = False) -> None:
        """Free the slot; its KV too unless keep_kv (kept for a later adopt)."""
        ...

    def step(self, inputs: list[StepInput]) -> StepOutput:
        """One batched forward pass over the inputs (their tokens together must fit
        max_batch_tokens)."""
        ...

    def score(self, tokens: list[int], start: int, temperature: float = 0.0,
              top_p: float = 1.0, top_k: int = 0) -> list[float]:
        """log p(tokens[i] | tokens[:i]) for i >= start, under the same sampling distribution
        step() draws from, in a fresh sequence (a trainer's recomputation, for checking the
        log-probs a rollout reported)."""
        ...

    def close(self) -> None:
        """Frees the model and its KV."""
        ...


@dataclass
class TurnOutput:
    """What one turn of a session engine produced, filled in as it streams."""

    tokens: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    cached_tokens: int = 0  # prompt tokens the engine's prefix cache served (resubmit)
    logprobs: list[float] = field(default_factory=list)  # per token, when params asked for them


class SessionTurn(Protocol):
    """One trajectory's streaming-input session: its KV stays between turns."""

    def turn(self, tokens: list[int], params: Any, out: TurnOutput | None = None
             ) -> AsyncIterator[list[int]]:
        """Append tokens (prefilled: only these) and stream the generated tokens until the
        turn ends; out gets the finish reason and log-probs."""
        ...

    async def close(self) -> None:
        """Ends the session: the engine frees its KV."""
        ...


class SessionEngine(Protocol):
    """An engine that batches and schedules itself (vLLM on GPU nodes)."""

    max_tokens_per_seq: int  # context length of one sequence

    @property
    def n_vocab(self) -> int:
        """The vocabulary's size (token ids are below it)."""
        ...

    def tokenize(self, text: str, special: bool = True) -> list[int]:
        ...

    def detokenize(self, tokens: list[int]) -> str:
        ...

    def token_id(self, text: str) -> int | None:
        """The id of a single-token string (a chat template marker), else None."""
        ...

    def chat_format(self) -> ChatFormat:
        ...

    def params(self, max_tokens: int, temperature: float = 0.0, seed: int | None = None,
               forced: list[int] | None = None, stop_token_ids: list[int] | None = None,
               top_p: float = 1.0, top_k: int = 0, logprobs: bool = False) -> Any:
        """The engine's sampling parameters; `forced` replays these tokens."""
        ...

    def session(self, name: str) -> SessionTurn:
        ...

    def request(self, tokens: list[int], params: Any, out: TurnOutput
                ) -> AsyncIterator[list[int]]:
        """A fresh request with the whole context (resubmit); out.cached_tokens gets what the
        prefix cache served."""
        ...

    async def score(self, tokens: list[int], start: int) -> list[float]:
        ...

    def close(self) -> None:
        ...
