"""One conformance suite run against every LanguageModel backend (STYLE.md habit 14).

Backends: the test doubles (HashLM, and CountingLM wrapping it), the transformers backend on the tiny
random Llama and on the real packaged SmolLM2 and Gemma 3 270M base (fp32; Gemma skips where the
``gemma`` extra is not installed), the ``openai`` backend against a real
``popsim serve`` process on loopback (started once for this module), and vLLM where it is installed
(a GPU package: the parametrisation skips elsewhere). A capability a backend lacks by design is not
skipped: the test asserts its one-line CapabilityError, which names the backend and the fix.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from popsim.exceptions import CapabilityError, LMInputError
from popsim.lm import Chat
from popsim.lm.sketch import sketch_logprob
from popsim.lm.testing import CountingLM, HashLM
from popsim.mop.scoring import ScoreCache

PROMPTS = [
    "The capital of France is",
    Chat.of("Describe your favourite film in one sentence."),
    "Q: Should the government spend more on roads?\nA:",
    "I like to eat",
]
CONTS = [" Paris", " It is a thriller.", " too little", " apples and bananas"]
OPTIONS = [[" Paris", " London", " Berlin"], [" Yes", " No"], [" too little", " about right", " too much"],
           [" apples", " rocks", " bread", " soup"]]

BACKENDS = ["hash", "counting", "tiny", "smollm", "gemma", "openai", "vllm"]
# What each backend cannot do, by design ("grad": scores differentiable in the temperature).
LACKS: dict[str, set[str]] = {
    "hash": {"token_logprobs"}, "counting": {"token_logprobs"}, "tiny": set(), "smollm": set(), "gemma": set(),
    "openai": {"grad", "score_sketches", "token_logprobs"}, "vllm": {"grad", "score_sketches", "token_logprobs"},
}
# Scores of one pair in different batches agree within this (vLLM's GPU kernels are not batch-invariant).
ATOL = {"vllm": 1e-2}


@pytest.fixture(scope="module")
def vllm_lm(smollm):
    pytest.importorskip("vllm")
    if not torch.cuda.is_available():
        pytest.skip("vllm is installed but no GPU is visible")
    from popsim.lm.loading import converted_gguf_dir, resolve_lm
    from popsim.lm.vllm_backend import VLLMLanguageModel

    folder = converted_gguf_dir(resolve_lm("smollm2-135m-instruct"))  # the packaged SmolLM2, de-quantised
    return VLLMLanguageModel(str(folder), dtype="fp32", gpu_memory_utilization=0.3)


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def lm(backend, request):
    if backend == "hash":
        return HashLM()
    if backend == "counting":
        return CountingLM(HashLM())
    fixture = {"tiny": "tiny_lm", "smollm": "smollm", "gemma": "gemma", "openai": "client", "vllm": "vllm_lm"}[backend]
    return request.getfixturevalue(fixture)


def test_score_keeps_order_and_is_batch_independent(lm, backend):
    atol = ATOL.get(backend, 1e-4)
    batched = lm.score(PROMPTS, CONTS)
    singles = torch.cat([lm.score([p], [c]) for p, c in zip(PROMPTS, CONTS)])
    assert batched.shape == (len(PROMPTS),)
    assert torch.allclose(batched, singles, atol=atol)
    reversed_scores = lm.score(PROMPTS[::-1], CONTS[::-1])
    assert torch.allclose(reversed_scores.flip(0), batched, atol=atol)
    mixed = lm.score([PROMPTS[2], "An unrelated prompt", PROMPTS[0]], [CONTS[2], " ok", CONTS[0]])
    assert torch.allclose(mixed[[2, 0]], batched[[0, 2]], atol=atol)  # other rows do not move a row
    assert bool((batched < 0).all())


def test_score_temperature_matters_and_is_differentiable_or_says_not(lm, backend):
    cold = lm.score(PROMPTS, CONTS, temperature=0.5)
    assert not torch.allclose(cold, lm.score(PROMPTS, CONTS, temperature=1.0))
    tau = torch.tensor([0.6, 0.9, 1.4, 0.7], requires_grad=True)
    if "grad" in LACKS[backend]:
        with pytest.raises(CapabilityError, match="not differentiable") as err:
            lm.score(PROMPTS, CONTS, temperature=tau)
        assert "\n" not in str(err.value)
        return
    lm.score(PROMPTS, CONTS, temperature=tau).sum().backward()
    assert torch.isfinite(tau.grad).all()
    assert bool((tau.grad.abs() > 0).all())


def test_option_logprobs_normalised_and_equal_to_scores(lm, backend):
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
        assert np.allclose(lp, group - np.logaddexp.reduce(group), atol=ATOL.get(backend, 1e-4))


def test_generate_same_seed_same_text_and_row_independent(lm):
    prompts = PROMPTS[:3]
    a = lm.generate(prompts, max_new_tokens=12, temperature=0.8, seed=[1, 2, 3])
    b = lm.generate(prompts, max_new_tokens=12, temperature=0.8, seed=[1, 2, 3])
    assert a == b and len(a) == 3 and all(isinstance(t, str) for t in a)
    alone = lm.generate(prompts[1:2], max_new_tokens=12, temperature=0.8, seed=[2])
    assert alone[0] == a[1]


@pytest.mark.parametrize(
    "call",
    [
        lambda lm: lm.score(["a", "b"], ["x"]),
        lambda lm: lm.score([], []),
        lambda lm: lm.score(["a"], ["b"], temperature=[1.0, 2.0]),
        lambda lm: lm.option_logprobs(["a", "b"], [[" x", " y"]]),
        lambda lm: lm.option_logprobs(["a"], [[]]),
        lambda lm: lm.generate(["a", "b"], max_new_tokens=4, seed=[1, 2, 3]),
        lambda lm: lm.generate(["a"], max_new_tokens=0),
        lambda lm: lm.generate("a single string", max_new_tokens=4),
    ],
    ids=["score-lengths", "score-empty", "score-temperatures", "options-lengths", "options-empty",
         "generate-seeds", "generate-no-tokens", "generate-string"],
)
def test_mismatched_or_empty_inputs_raise_one_line_input_errors(lm, call):
    with pytest.raises(LMInputError) as err:
        call(lm)
    assert "\n" not in str(err.value)


def test_sketches_reproduce_scores_or_the_backend_says_how_to_fit(lm, backend):
    if "score_sketches" in LACKS[backend]:
        assert not lm.supports_sketches
        for attempt in (lambda: lm.score_sketches(PROMPTS, CONTS), lambda: ScoreCache(lm)):
            with pytest.raises(CapabilityError, match=f"the {lm.backend} backend .* cannot return logit sketches"
                               ".*fit MoP with a local transformers model") as err:
                attempt()
            assert "\n" not in str(err.value)
        return
    assert lm.supports_sketches
    sketches = lm.score_sketches(PROMPTS, CONTS)
    n_tokens = sum(s.n_tokens for s in sketches)
    assert n_tokens > len(PROMPTS)
    for tau in (0.6, 1.0, 1.5):
        exact = lm.score(PROMPTS, CONTS, temperature=tau)
        approx = sketch_logprob(sketches, torch.full((len(PROMPTS),), tau))
        assert float((exact - approx).abs().sum()) / n_tokens < 1e-3, tau


def test_token_logprobs_sum_to_scores_or_the_backend_says_what_to_serve(lm, backend):
    if "token_logprobs" in LACKS[backend]:
        assert not lm.supports_token_logprobs
        with pytest.raises(CapabilityError, match=f"the {lm.backend} backend .* per-token logprobs.*popsim serve"):
            lm.token_logprobs([[1, 2]], [[3]])
        return
    prompt_ids = [lm.encode_prompt(p) for p in PROMPTS]
    cont_ids = [lm.encode_continuation(c) for c in CONTS]
    rows = lm.token_logprobs(prompt_ids, cont_ids, temperature=0.8, top_k=3)
    assert [len(r[0]) for r in rows] == [len(c) for c in cont_ids]
    assert all(r[1].shape == (len(c), 3) for r, c in zip(rows, cont_ids))
    sums = torch.stack([r[0].sum() for r in rows])
    assert torch.allclose(sums, lm.score(PROMPTS, CONTS, temperature=0.8), atol=1e-4)


def test_identity_is_stable_and_names_the_model(lm, backend):
    identity = lm.identity
    assert isinstance(identity, str) and identity == lm.identity
    if backend in {"tiny", "smollm", "gemma", "openai"}:  # weights' digest and dtype; a popsim server reports its own
        assert "@sha256-" in identity and "/float32/" in identity
