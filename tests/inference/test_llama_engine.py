"""The embedded engine on real weights: several sequences in one context, delta prefill, fork,
truncate (prefix reuse) and clear errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import required_module

required_module("llama_cpp", "PERFBOX_REQUIRE_LLAMA")
from perfbox.inference.engine import StepInput  # noqa: E402
from perfbox.inference.engines.llama_cpp import EngineUnavailable, LlamaCppEngine  # noqa: E402

PROMPT = "<|im_start|>user\nName three GPU memory spaces.<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def engine() -> Iterator[LlamaCppEngine]:
    e = LlamaCppEngine(num_slots=4, ctx_per_seq=512, max_batch_tokens=256, threads=2)
    yield e
    e.close()


def _greedy(engine: LlamaCppEngine, seq: int, first: int, n: int) -> list[int]:
    tokens = [first]
    for _ in range(n - 1):
        tokens.append(engine.step([StepInput(seq, [tokens[-1]])]).next_tokens[seq])
    return tokens


def test_batched_sequences_decode_as_they_would_alone(engine: LlamaCppEngine) -> None:
    prompt = engine.tokenize(PROMPT)
    assert engine.detokenize(prompt) == PROMPT
    a = engine.start()
    first = engine.step([StepInput(a, prompt)]).next_tokens[a]
    alone = _greedy(engine, a, first, 12)
    engine.drop(a)
    # the same prompt in two sequences prefilled and decoded in shared steps
    b, c = engine.start(), engine.start()
    out = engine.step([StepInput(b, prompt), StepInput(c, prompt)])
    assert out.num_prefill_tokens == 2 * len(prompt)
    tb, tc = [out.next_tokens[b]], [out.next_tokens[c]]
    for _ in range(11):
        out = engine.step([StepInput(b, [tb[-1]]), StepInput(c, [tc[-1]])])
        tb.append(out.next_tokens[b])
        tc.append(out.next_tokens[c])
    assert tb == tc == alone
    assert engine.length(b) == len(prompt) + 11
    engine.drop(b)
    engine.drop(c)


def test_fork_and_truncate_reuse_the_prefix(engine: LlamaCppEngine) -> None:
    prompt = engine.tokenize(PROMPT)
    a = engine.start()
    first = engine.step([StepInput(a, prompt)]).next_tokens[a]
    child = engine.fork(a)
    assert engine.length(child) == len(prompt)
    continuation = _greedy(engine, a, first, 8)
    assert _greedy(engine, child, first, 8) == continuation  # the fork holds the same KV
    engine.truncate(a, len(prompt))  # forget what was generated, keep the prompt's KV
    assert engine.length(a) == len(prompt)
    assert _greedy(engine, a, first, 8) == continuation
    engine.drop(a)
    engine.drop(child)


def test_clear_errors(engine: LlamaCppEngine, tmp_path: Path) -> None:
    seq = engine.start()
    with pytest.raises(ValueError, match="600 tokens in one step; at most 256"):
        engine.step([StepInput(seq, [1] * 600)])  # refused before the batch is written
    engine.step([StepInput(seq, [1] * 250, want_next=False)])
    engine.step([StepInput(seq, [1] * 250, want_next=False)])
    with pytest.raises(ValueError, match="exceed its context of 512"):
        engine.step([StepInput(seq, [1] * 20)])
    engine.drop(seq)
    with pytest.raises(EngineUnavailable, match="does not exist"):
        LlamaCppEngine(tmp_path / "missing.gguf")
    held = [engine.start() for _ in range(4)]
    with pytest.raises(RuntimeError, match="no free sequence slot"):
        engine.start()
    for s in held:
        engine.drop(s)


def test_sampling_depends_on_seed_and_position_only(engine: LlamaCppEngine) -> None:
    """Temperature sampling: the same (seed, position) draws the same token wherever the
    sequence sits in a batch; another seed draws differently; temperature 0 is greedy."""
    prompt = engine.tokenize(PROMPT)

    def sample(seed: int, temperature: float, n: int = 10) -> list[int]:
        seq = engine.start()
        out = engine.step([StepInput(seq, prompt, temperature=temperature, seed=seed)])
        tokens = [out.next_tokens[seq]]
        for _ in range(n - 1):
            out = engine.step([StepInput(seq, [tokens[-1]], temperature=temperature,
                                         seed=seed)])
            tokens.append(out.next_tokens[seq])
        engine.drop(seq)
        return tokens

    first = sample(7, 1.0)
    assert sample(7, 1.0) == first
    assert any(sample(seed, 1.0) != first for seed in (8, 9, 10))
    seq = engine.start()
    greedy_first = engine.step([StepInput(seq, prompt)]).next_tokens[seq]
    greedy = _greedy(engine, seq, greedy_first, 10)
    engine.drop(seq)
    assert sample(7, 0.0) == greedy


def test_choose_token_follows_the_distribution() -> None:
    import numpy as np

    from perfbox.inference.engines.llama_cpp import choose_token

    logits = np.log(np.array([0.7, 0.2, 0.1, 1e-9], dtype=np.float32))
    draws = [choose_token(logits, 1.0, seed, 5) for seed in range(2000)]
    share = np.bincount(draws, minlength=4) / len(draws)
    assert abs(share[0] - 0.7) < 0.05 and abs(share[1] - 0.2) < 0.04 and share[3] == 0
    assert choose_token(logits, 0.0, 1, 5) == 0  # greedy
    cold = [choose_token(logits, 0.05, seed, 5) for seed in range(200)]
    assert cold.count(0) == 200  # a low temperature sharpens toward the argmax
