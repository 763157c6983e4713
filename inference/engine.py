"""The engine interface the rollout worker drives: sequences with addressable KV state.

A sequence lives in a slot of the engine's KV cache. The worker starts it, feeds it tokens
(a prompt or a tool's output: *delta prefill*, only the new tokens), decodes it one token per
step batched with every other sequence, keeps it resident while its tool runs, forks it for the
samples of a group and drops it. `step` is the one batched forward pass: each input carries the
tokens to add to one sequence (one for decode, many for prefill) and whether the caller wants
the next token after them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


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
    """What every engine offers (llama.cpp on the CPU, vLLM on GPU nodes)."""

    name: str
    num_slots: int  # sequences that can hold KV at once
    max_tokens_per_seq: int  # context length of one sequence
    max_batch_tokens: int  # tokens one step may take in all

    def tokenize(self, text: str, special: bool = True) -> list[int]:
        """Tokens of text; special tokens (chat template markers) are parsed, unless special
        is False: then a marker's text is plain text (a tool's output cannot open a turn)."""
        ...

    def detokenize(self, tokens: list[int]) -> str:
        ...

    def eos_tokens(self) -> set[int]:
        ...

    def start(self) -> int:
        """A free slot's seq_id (empty KV); raises RuntimeError when none is free."""
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

    def drop(self, seq_id: int) -> None:
        """Free the slot and its KV."""
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
