"""Next-token sampling on the embedded engine, and the log-probability of what was sampled.

Training needs, for every sampled token, its log-probability under the distribution it was
drawn from (a PPO/GRPO importance ratio compares the trainer's policy against it). That
distribution is softmax(logits / temperature), restricted to the top_k most likely tokens and
then to the smallest set whose mass reaches top_p, renormalised: the order vLLM and
transformers apply them. Greedy decoding (temperature 0) has no distribution to draw from;
its log-probability is reported under the model's own distribution (temperature 1, no
truncation), which is what a trainer recomputes.

The draw's randomness depends only on (seed, position): a forked sample or a re-prefilled
sequence draws the same token at the same place, so a rollout is reproducible whatever the
batching.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class Sampler:
    """How one sequence picks its next token."""

    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0  # nucleus mass kept (1: all)
    top_k: int = 0  # most likely tokens kept (0: all)
    seed: int = 0  # the draw at a position depends only on (seed, position, logits)


def _log_probs(logits: "np.ndarray", sampler: Sampler) -> "np.ndarray":
    """log of the sampling distribution over the vocabulary (-inf outside its support)."""
    import numpy as np

    temperature = sampler.temperature if sampler.temperature > 0 else 1.0
    scaled = logits.astype(np.float64) / temperature
    if sampler.temperature > 0 and 0 < sampler.top_k < len(scaled):
        kth = np.partition(scaled, -sampler.top_k)[-sampler.top_k]
        scaled = np.where(scaled >= kth, scaled, -np.inf)
    scaled = scaled - scaled.max()
    logp = scaled - np.log(np.exp(scaled).sum())
    if sampler.temperature > 0 and sampler.top_p < 1.0:
        order = np.argsort(-logp, kind="stable")
        mass = np.cumsum(np.exp(logp[order]))
        keep = int(np.searchsorted(mass, sampler.top_p)) + 1  # smallest set reaching top_p
        dropped = order[keep:]
        logp[dropped] = -np.inf
        kept = logp[order[:keep]]
        logp = logp - np.log(np.exp(kept).sum())
    return logp


def sample(logits: "np.ndarray", sampler: Sampler, position: int) -> tuple[int, float]:
    """The next token and its log-probability under the sampling distribution."""
    import numpy as np

    logp = _log_probs(logits, sampler)
    if sampler.temperature <= 0.0:
        token = int(np.argmax(logits))
        return token, float(logp[token])
    probs = np.exp(logp)
    probs /= probs.sum()
    rng = np.random.default_rng((sampler.seed & 0xFFFFFFFF, position))
    token = int(rng.choice(len(probs), p=probs))
    return token, float(logp[token])


def token_log_prob(logits: "np.ndarray", sampler: Sampler, token: int) -> float:
    """log p(token) under the sampling distribution of these logits (scoring a sequence)."""
    return float(_log_probs(logits, sampler)[token])
