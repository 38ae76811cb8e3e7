"""One conformance suite run against every LanguageModel backend (STYLE.md habit 14)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from popsim.lm import Chat
from popsim.lm.testing import HashLM

PROMPTS = [
    "The capital of France is",
    Chat.of("Describe your favourite film in one sentence."),
    "Q: Should the government spend more on roads?\nA:",
    "I like to eat",
]
CONTS = [" Paris", " It is a thriller.", " too little", " apples and bananas"]
OPTIONS = [[" Paris", " London", " Berlin"], [" Yes", " No"], [" too little", " about right", " too much"],
           [" apples", " rocks", " bread", " soup"]]


@pytest.fixture(params=["hash", "tiny", "smollm"])
def lm(request):
    if request.param == "hash":
        return HashLM()
    return request.getfixturevalue(f"{request.param}_lm" if request.param == "tiny" else "smollm")


def test_score_keeps_order_and_is_batch_independent(lm):
    batched = lm.score(PROMPTS, CONTS)
    singles = torch.cat([lm.score([p], [c]) for p, c in zip(PROMPTS, CONTS)])
    assert batched.shape == (len(PROMPTS),)
    assert torch.allclose(batched, singles, atol=1e-4)
    reversed_scores = lm.score(PROMPTS[::-1], CONTS[::-1])
    assert torch.allclose(reversed_scores.flip(0), batched, atol=1e-4)
    assert bool((batched < 0).all())


def test_score_temperature_matters_and_is_differentiable(lm):
    tau = torch.tensor([0.6, 0.9, 1.4, 0.7], requires_grad=True)
    scores = lm.score(PROMPTS, CONTS, temperature=tau)
    scores.sum().backward()
    assert torch.isfinite(tau.grad).all()
    assert bool((tau.grad.abs() > 0).all())
    cold = lm.score(PROMPTS, CONTS, temperature=0.5)
    assert not torch.allclose(cold, lm.score(PROMPTS, CONTS, temperature=1.0))


def test_option_logprobs_normalised_and_equal_to_scores(lm):
    out = lm.option_logprobs(PROMPTS, OPTIONS, temperature=[1.0, 0.6, 1.0, 1.5])
    assert [len(o) for o in out] == [len(o) for o in OPTIONS]
    for lp in out:
        assert np.isclose(np.exp(lp).sum(), 1.0, atol=1e-6)
    # the shared-prefix path must agree with scoring each option as a full continuation
    flat_p = [p for p, opts in zip(PROMPTS, OPTIONS) for _ in opts]
    flat_c = [o for opts in OPTIONS for o in opts]
    raw = lm.score(flat_p, flat_c).numpy()
    start = 0
    for lp, opts in zip(lm.option_logprobs(PROMPTS, OPTIONS), OPTIONS):
        group = raw[start : start + len(opts)]
        start += len(opts)
        assert np.allclose(lp, group - np.logaddexp.reduce(group), atol=1e-4)


def test_generate_same_seed_same_text_and_row_independent(lm):
    prompts = PROMPTS[:3]
    a = lm.generate(prompts, max_new_tokens=12, temperature=0.8, seed=[1, 2, 3])
    b = lm.generate(prompts, max_new_tokens=12, temperature=0.8, seed=[1, 2, 3])
    assert a == b and len(a) == 3 and all(isinstance(t, str) for t in a)
    alone = lm.generate(prompts[1:2], max_new_tokens=12, temperature=0.8, seed=[2])
    assert alone[0] == a[1]
