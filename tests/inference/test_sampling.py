"""The sampling distribution and the log-probability reported for each sampled token."""

from __future__ import annotations

import math

import numpy as np

from perfbox.inference.sampling import Sampler, sample, token_log_prob

LOGITS = np.array([3.0, 2.0, 1.0, 0.0, -1.0])


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def test_greedy_reports_the_models_own_log_probability() -> None:
    token, logprob = sample(LOGITS, Sampler(0.0), position=3)
    assert token == 0
    assert math.isclose(logprob, math.log(_softmax(LOGITS)[0]))


def test_temperature_top_k_and_top_p_shape_the_distribution() -> None:
    hot = Sampler(2.0)
    assert math.isclose(token_log_prob(LOGITS, hot, 1), math.log(_softmax(LOGITS / 2)[1]))
    top2 = Sampler(1.0, top_k=2)
    kept = _softmax(LOGITS[:2])
    assert math.isclose(token_log_prob(LOGITS, top2, 1), math.log(kept[1]))
    assert token_log_prob(LOGITS, top2, 2) == float("-inf")
    # top_p 0.7: token 0 holds 0.64 of the mass, so tokens 0 and 1 are kept, renormalised
    nucleus = Sampler(1.0, top_p=0.7)
    p = _softmax(LOGITS)
    assert math.isclose(token_log_prob(LOGITS, nucleus, 1), math.log(p[1] / (p[0] + p[1])))
    assert token_log_prob(LOGITS, nucleus, 2) == float("-inf")


def test_draws_follow_the_reported_distribution_and_repeat_per_seed() -> None:
    sampler = Sampler(1.0, top_k=3)
    draws = [sample(LOGITS, Sampler(1.0, top_k=3, seed=s), 5) for s in range(3000)]
    counts = np.bincount([t for t, _ in draws], minlength=5) / len(draws)
    expected = np.exp([token_log_prob(LOGITS, sampler, t) for t in range(5)])
    assert np.allclose(counts, expected, atol=0.03), (counts, expected)
    assert counts[3] == counts[4] == 0
    assert all(math.isclose(lp, token_log_prob(LOGITS, sampler, t)) for t, lp in draws[:50])
    assert sample(LOGITS, Sampler(1.0, seed=9), 5) == sample(LOGITS, Sampler(1.0, seed=9), 5)
