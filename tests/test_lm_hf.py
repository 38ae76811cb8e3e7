"""The transformers backend on the real packaged SmolLM2: exactness, temperature, sketches, errors."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from popsim.exceptions import LMInputError, ModelLoadError
from popsim.lm import Chat
from popsim.lm.hf import HFLanguageModel, token_budget_batches
from popsim.lm.sketch import sketch_logprob

REVIEW_PROMPTS = [
    Chat.of("You are a movie critic. Write a short review of the movie Home Alone 3."),
    Chat.of("You are a casual viewer. Write a short review of a comedy you watched."),
] * 4
REVIEWS = [
    " It was a fun family film with a few good laughs, though the plot felt thin.",
    " Honestly the worst sequel I have seen, boring and far too long.",
] * 4


def test_batched_score_equals_per_pair_score(smollm):
    batched = smollm.score(REVIEW_PROMPTS, REVIEWS)
    single = torch.cat([smollm.score([p], [c]) for p, c in zip(REVIEW_PROMPTS, REVIEWS)])
    assert torch.allclose(batched, single, atol=1e-4)


def test_score_gradient_wrt_temperature_is_finite_and_nonzero(smollm):
    tau = torch.tensor(0.6, requires_grad=True)
    smollm.score(REVIEW_PROMPTS[:2], REVIEWS[:2], temperature=tau).sum().backward()
    assert torch.isfinite(tau.grad) and tau.grad.abs() > 0


def test_continuation_is_tokenised_apart_from_prompt(smollm):
    """A prompt ending in a space: tokenising prompt + continuation as one string would merge the space
    into " yes" and move the boundary. The score must be exactly the log-likelihood of the continuation's
    own tokens after the prompt's own tokens, checked against a plain forward pass of the whole model."""
    tok = smollm.tokenizer
    prompt, cont = "The answer is ", "yes"
    ids_p, ids_c = smollm.encode_prompt(prompt), smollm.encode_continuation(cont)
    assert ids_p == tok(prompt)["input_ids"] and tok.decode(ids_p) == prompt  # no BOS in SmolLM2's plain text
    assert ids_c == tok(cont, add_special_tokens=False)["input_ids"] and tok.decode(ids_c) == cont
    joint = tok(prompt + cont)["input_ids"]
    assert joint[: len(ids_p) - 1] == ids_p[:-1] and joint[len(ids_p) - 1 :] != ids_p[-1:] + ids_c  # the trap
    with torch.no_grad():
        logits = smollm.model(torch.tensor([ids_p + ids_c])).logits[0].float()
    positions = torch.arange(len(ids_p) - 1, len(ids_p) + len(ids_c) - 1)
    reference = logits[positions].log_softmax(-1).gather(1, torch.tensor(ids_c).view(-1, 1)).sum()
    assert abs(float(smollm.score([prompt], [cont])[0]) - float(reference)) < 1e-4
    # a chat prompt renders with the template and carries its special tokens once (no BOS added twice)
    chat = Chat.of("Say yes.")
    chat_ids = smollm.encode_prompt(chat)
    assert tok.decode(chat_ids) == smollm.render(chat)
    assert chat_ids[:2] != [tok.bos_token_id] * 2


def test_sketch_recovers_logprob_at_any_temperature(smollm):
    sketches = smollm.score_sketches(REVIEW_PROMPTS[:2], REVIEWS[:2])
    n_tokens = sum(s.n_tokens for s in sketches)
    for tau in (0.3, 0.6, 1.0, 1.5, 2.0):
        exact = smollm.score(REVIEW_PROMPTS[:2], REVIEWS[:2], temperature=tau)
        approx = sketch_logprob(sketches, torch.full((2,), tau))
        assert (exact - approx).abs().sum() / n_tokens < 1e-3, tau


def test_generate_chat_prompt_gives_text(smollm):
    out = smollm.generate([Chat.of("Say hello in one short sentence.")], max_new_tokens=16, seed=3)
    assert len(out[0].strip()) > 0


def test_generate_greedy_is_deterministic_without_seed_effect(smollm):
    a = smollm.generate(["Once upon a time"], max_new_tokens=8, temperature=0.0, seed=1)
    b = smollm.generate(["Once upon a time"], max_new_tokens=8, temperature=0.0, seed=99)
    assert a == b


SPENDING_TOPICS = [
    "the space program", "improving and protecting the environment", "improving and protecting the "
    "nation's health", "halting the rising crime rate", "dealing with drug addiction", "welfare",
    "foreign aid", "highways and bridges", "Social Security", "supporting scientific research",
]


def test_bf16_option_distribution_close_to_fp32(smollm, smollm_bf16):
    """Survey-style prompts (transcript with a respondent's earlier answers): bf16 within TV 0.02."""
    prefix = (
        "Survey interview transcript.\nRespondent: a 45-year-old woman, bachelor's degree, Democrat.\n\n"
        "Q: Are we spending too much, too little, or about the right amount on mass transportation?\n"
        "A: too little\n"
    )
    prompts = [
        prefix + f"Q: Are we spending too much, too little, or about the right amount on {t}?\nA:"
        for t in SPENDING_TOPICS
    ]
    opts = [[" too little", " about right", " too much"]] * len(prompts)
    fp32 = smollm.option_logprobs(prompts, opts)
    bf16 = smollm_bf16.option_logprobs(prompts, opts)
    tv = np.array([0.5 * np.abs(np.exp(a) - np.exp(b)).sum() for a, b in zip(fp32, bf16)])
    assert tv.mean() < 0.02 and tv.max() < 0.05, tv
    if smollm_bf16.device.type == "cpu":  # the default bf16 CPU path is the compiled one:
        assert smollm_bf16.compiled_blocks == 30 * 3 + 1 + 30  # (2 norms + MLP) per layer, final norm, layers


def test_compiled_bf16_is_as_close_to_fp32_as_eager_bf16(smollm, smollm_bf16):
    """Compiling the norm/MLP blocks changes bf16 rounding, not accuracy: measured TV to fp32 0.021
    compiled vs 0.026 eager on these bare prompts (the two bf16 paths differ from each other by ~0.03)."""
    eager = HFLanguageModel("smollm2-135m-instruct", dtype="bf16", compile="off")
    assert eager.compiled_blocks == 0
    prompts = [f"Q: Are we spending too much, too little, or about right on {t}?\nA:" for t in SPENDING_TOPICS]
    opts = [[" too little", " about right", " too much"]] * len(prompts)
    ref = smollm.option_logprobs(prompts, opts)

    def tv_to_fp32(lm) -> float:
        got = lm.option_logprobs(prompts, opts)
        return float(np.mean([0.5 * np.abs(np.exp(x) - np.exp(y)).sum() for x, y in zip(ref, got)]))

    compiled, plain = tv_to_fp32(smollm_bf16), tv_to_fp32(eager)
    assert compiled < 0.03 and compiled <= plain + 0.005, (compiled, plain)


def test_compile_falls_back_to_eager_when_the_backend_fails(tiny_lm):
    from popsim.lm.compile import compile_elementwise_blocks, should_compile

    assert should_compile("auto", torch.device("cpu"), torch.bfloat16)
    assert not should_compile("auto", torch.device("cpu"), torch.float32)
    assert not should_compile("auto", torch.device("cuda"), torch.bfloat16)
    assert should_compile("on", torch.device("cuda"), torch.float32)
    model = copy.deepcopy(tiny_lm.model)

    def broken() -> None:
        raise RuntimeError("no C++ compiler")

    with pytest.warns(RuntimeWarning, match="running eager"):
        assert compile_elementwise_blocks(model, broken) == 0
    assert all(getattr(m, "_compiled_call_impl", None) is None for m in model.modules())
    assert all("forward" not in vars(m) for m in model.modules())  # decoder layers back on their eager forward


@pytest.mark.parametrize("max_tree_tokens", [1024, 40])
def test_prefix_tree_scores_equal_full_prompt_scores(smollm, max_tree_tokens):
    """Tree-attention scoring (shared prefix once, trees split when long) equals scoring every
    (prompt + option) in full, within 1e-4 in fp32: two agents x several questions, a prompt that is a
    strict prefix of others (empty suffix), a prompt shared by nobody, multi-token options."""
    agents = ["Survey interview transcript.\nRespondent: a 45-year-old woman, bachelor's degree, Democrat.\n",
              "Survey interview transcript.\nRespondent: a 70-year-old man, high school, Republican.\n"]
    prompts, options = [], []
    for agent in agents:
        for topic in SPENDING_TOPICS[:4]:
            prompts.append(agent + f"Q: Are we spending too much, too little or about right on {topic}?\nA:")
            options.append([" too little", " about right", " too much"])
        prompts.append(agent)
        options.append([" Q:", " The respondent refused to answer this question."])
    prompts.append("Something else entirely")
    options.append([" yes", " no"])
    # raw scores too, with lone pairs (a prompt shared by nobody, one continuation: the flat path) mixed in
    pairs = [(p, o) for p, opts in zip(prompts, options) for o in opts]
    pairs += [("A lone prompt about the weather", " It will rain."), ("Another lone prompt", " ok")]
    old = (smollm.prefix_sharing, smollm.max_tree_tokens)
    try:
        smollm.max_tree_tokens = max_tree_tokens
        tree = smollm.option_logprobs(prompts, options)
        tree_scores = smollm.score(*zip(*pairs))
        smollm.prefix_sharing = False
        full = smollm.option_logprobs(prompts, options)
        full_scores = smollm.score(*zip(*pairs))
    finally:
        smollm.prefix_sharing, smollm.max_tree_tokens = old
    for a, b in zip(tree, full, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)
    np.testing.assert_allclose(tree_scores.numpy(), full_scores.numpy(), atol=1e-4)
    assert not all(np.allclose(a, tree[0]) for a in tree[1:])  # the options are really scored


def test_token_budget_batches_cover_all_rows_within_budget():
    lengths = [5, 100, 30, 30, 7, 64, 1]
    batches = list(token_budget_batches(lengths, budget=128))
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) == 1 or max(lengths[i] for i in b) * len(b) <= 128


@pytest.mark.parametrize(
    "call",
    [
        lambda lm: lm.score([], []),
        lambda lm: lm.score(["a", "b"], ["x"]),
        lambda lm: lm.option_logprobs(["a"], [[]]),
        lambda lm: lm.generate([], max_new_tokens=4),
        lambda lm: lm.generate("a single string", max_new_tokens=4),
        lambda lm: lm.score(["a"], ["b"], temperature=-1.0),
    ],
)
def test_bad_calls_raise_one_line_input_errors(tiny_lm, call):
    with pytest.raises(LMInputError) as err:
        call(tiny_lm)
    assert "\n" not in str(err.value)


def test_unknown_model_name_is_a_clear_error():
    with pytest.raises(ModelLoadError, match="not a known name"):
        HFLanguageModel("no-such-model-xyz")


def test_broken_gguf_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("POPSIM_CACHE_DIR", str(tmp_path / "cache"))
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00garbage")
    with pytest.raises(ModelLoadError, match="could not load GGUF") as err:
        HFLanguageModel(str(bad))
    assert "\n" not in str(err.value)


def test_hub_id_not_cached_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ModelLoadError, match="offline"):
        HFLanguageModel("some-owner/some-missing-model")
