"""The transformers backend's decoder: slot cache, continuous batching, counter-based sampling.

Exactness against transformers' own greedy ``generate`` (tiny random Llama, and a tiny random Gemma 3
with sliding-window layers), the determinism contract (a row's text depends only on its prompt,
temperature and seed, whatever batch and batch size it runs in, including rows that enter a slot freed
mid-call) on the real SmolLM2 in fp32, and the sampler's distribution.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from popsim.lm import Chat
from popsim.lm.sampling import gumbel_noise, pick_tokens, seed_keys

PROMPTS = [
    "Once upon a time",
    Chat.of("Describe your favourite film in one sentence."),
    "Q: Should the government spend more on roads?\nA:",
    "The weather today is " * 6,
    "Hi",
]


def hf_greedy(lm, prompt, n: int) -> str:
    ids = torch.tensor([lm.encode_prompt(prompt)])
    out = lm.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                            pad_token_id=lm._pad_id, eos_token_id=None)
    return lm.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def test_greedy_equals_transformers_generate(tiny_lm):
    got = tiny_lm.generate(PROMPTS, max_new_tokens=10, temperature=0.0, ignore_eos=True)
    assert got == [hf_greedy(tiny_lm, p, 10) for p in PROMPTS]


def test_greedy_on_the_packaged_smollm2_equals_transformers_generate(smollm):
    """The real model, fp32: the slot-cache decoder's greedy text is transformers' own, token for token."""
    got = smollm.generate(PROMPTS, max_new_tokens=12, temperature=0.0, ignore_eos=True)
    assert got == [hf_greedy(smollm, p, 12) for p in PROMPTS]
    assert len(set(got)) == len(PROMPTS)  # real text, different per prompt


def test_sliding_window_model_greedy_equals_transformers(tmp_path, tiny_lm):
    """Gemma 3 mixes sliding-window and full layers: the slot cache passes a mask per layer type."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from popsim.lm.hf import HFLanguageModel

    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=len(tiny_lm.tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=4,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"],
        pad_token_id=tiny_lm._pad_id, eos_token_id=tiny_lm.tokenizer.eos_token_id,
        bos_token_id=tiny_lm.tokenizer.bos_token_id,
    )
    Gemma3ForCausalLM(config).save_pretrained(tmp_path)
    tiny_lm.tokenizer.save_pretrained(tmp_path)
    lm = HFLanguageModel(str(tmp_path), dtype="fp32")
    prompts = [PROMPTS[0], PROMPTS[3]]  # the second is longer than the window
    got = lm.generate(prompts, max_new_tokens=8, temperature=0.0, ignore_eos=True)
    assert got == [hf_greedy(lm, p, 8) for p in prompts]


def test_smollm_row_text_independent_of_batch(smollm):
    """fp32 SmolLM2: the same prompt and seed give the same text alone, in any batch, in any order, and
    through one slot (every row after the first enters a slot another row freed)."""
    seeds = [11, 12, 13, 14, 15]
    kw = dict(max_new_tokens=10, temperature=0.9)
    together = smollm.generate(PROMPTS, seed=seeds, **kw)
    reordered = smollm.generate(PROMPTS[::-1], seed=seeds[::-1], **kw)[::-1]
    alone = [smollm.generate([p], seed=[s], **kw)[0] for p, s in zip(PROMPTS[:2], seeds[:2])]
    mixed = smollm.generate([PROMPTS[1], "Unrelated filler text", PROMPTS[0]], seed=[12, 99, 11], **kw)
    budget = smollm.batch_tokens
    smollm.batch_tokens = 64  # one 64-token slot: continuous batching through a single slot
    try:
        one_slot = smollm.generate(PROMPTS[:3], seed=seeds[:3], **kw)
    finally:
        smollm.batch_tokens = budget
    assert len(set(together)) == len(PROMPTS)
    assert reordered == together
    assert alone == together[:2]
    assert [mixed[2], mixed[0]] == together[:2]
    assert one_slot == together[:3]


def test_rows_ending_early_free_their_slot(tiny_lm):
    """With fewer slots than rows and rows that stop at different lengths, every row still gets the text it
    gets with a slot of its own."""
    kw = dict(temperature=1.0, seed=[5, 6, 7, 8, 9])
    roomy = tiny_lm.generate(PROMPTS, max_new_tokens=6, **kw) + tiny_lm.generate(PROMPTS, max_new_tokens=20, **kw)
    budget = tiny_lm.batch_tokens
    tiny_lm.batch_tokens = 128  # two 64-token slots
    try:
        tight = tiny_lm.generate(PROMPTS, max_new_tokens=6, **kw) + tiny_lm.generate(PROMPTS, max_new_tokens=20, **kw)
    finally:
        tiny_lm.batch_tokens = budget
    assert tight == roomy


def test_ignore_eos_gives_exactly_max_new_tokens(tiny_lm):
    ids = tiny_lm._generate_ids([tiny_lm.encode_prompt(p) for p in PROMPTS], [1.0] * 5, [1, 2, 3, 4, 5], 7, set())
    assert [len(t) for t in ids] == [7] * 5


def test_gumbel_max_samples_the_softmax():
    """Many seeds on one row of logits: token frequencies match softmax(logits / T) within sampling error."""
    torch.manual_seed(0)
    logits = torch.randn(1, 6) * 2
    n = 40_000
    keys = seed_keys(list(range(n)))
    for t in (1.0, 0.5):
        picks = pick_tokens(logits.expand(n, 6), torch.full((n,), t), keys, torch.zeros(n, dtype=torch.long))
        freq = np.bincount(picks.numpy(), minlength=6) / n
        expected = torch.softmax(logits[0] / t, dim=0).numpy()
        assert np.abs(freq - expected).max() < 4 * np.sqrt(expected * (1 - expected) / n).max()


def test_noise_depends_only_on_key_and_step():
    keys = seed_keys([1, 2, 3, 2**40 + 7])
    steps = torch.tensor([0, 5, 5, 9])
    noise = gumbel_noise(keys, steps, 1000)
    assert torch.equal(noise[1:3], gumbel_noise(keys[1:3], steps[1:3], 1000))  # batch make-up: no effect
    assert not torch.equal(noise[1], gumbel_noise(keys[1:2], torch.tensor([6]), 1000)[0])  # step: fresh
    assert not torch.equal(noise[1], noise[2])
    assert torch.isfinite(noise).all() and abs(float(noise.mean()) - 0.5772) < 0.05  # Gumbel's mean
    greedy = pick_tokens(torch.tensor([[0.0, 3.0, 1.0]]), torch.zeros(1), keys[:1], steps[:1])
    assert greedy.tolist() == [1]


def _murmur_fmix32(x: int) -> int:
    """murmur3's 32-bit finaliser on Python ints (the reference the tensor versions must equal bit for bit)."""
    x ^= x >> 16
    x = (x * 0x85EBCA6B) & 0xFFFFFFFF
    x ^= x >> 13
    x = (x * 0xC2B2AE35) & 0xFFFFFFFF
    return x ^ (x >> 16)


def test_noise_hash_is_murmur3_bit_for_bit_eager_and_compiled():
    """The int32 per-token hash wraps exactly as 32-bit unsigned arithmetic: every word, hence every uniform,
    equals the pure-Python murmur3 reference, eagerly and compiled (a texts-changing slip would be silent)."""
    keys = seed_keys([0, 1, 2**31 + 5, 2**63 + 12345])
    steps = torch.tensor([0, 3, 7, 2**33 + 1])
    vocab = 70_000  # token * golden ratio wraps many times
    mask = 0xFFFFFFFF
    expected = torch.empty(len(steps), vocab)
    for r, ((k0, k1), step) in enumerate(zip(keys.tolist(), steps.tolist(), strict=True)):
        row = _murmur_fmix32(k0 ^ _murmur_fmix32(k1 ^ _murmur_fmix32(step & mask)))
        words = np.array([_murmur_fmix32(_murmur_fmix32((row + t * 0x9E3779B9) & mask)) for t in range(vocab)],
                         dtype=np.int64)
        u = torch.from_numpy(((words >> 8).astype(np.float32) + 0.5) * (1.0 / (1 << 24)))
        expected[r] = -torch.log(-torch.log(u))
    assert torch.equal(gumbel_noise(keys, steps, vocab), expected)
    compiled = torch.compile(gumbel_noise, dynamic=True)(keys, steps, vocab)
    assert torch.allclose(compiled, expected, rtol=0, atol=1e-5)  # Inductor's vectorised log: last bits only
    assert torch.equal(compiled.argmax(dim=1), expected.argmax(dim=1))


def test_compiled_bf16_decode_step_matches_eager(smollm_bf16):
    """The compiled step (bf16 on CPU) samples what the same step samples eagerly, up to bf16 near-ties."""
    if smollm_bf16.compiled_blocks == 0:
        pytest.skip("compile is not active for this model (not CPU bf16)")
    kw = dict(max_new_tokens=12, temperature=0.0, ignore_eos=True)
    saved = smollm_bf16.compile_decode_tokens
    smollm_bf16.compile_decode_tokens = 0  # this small call takes the compiled step
    try:
        compiled = smollm_bf16.generate(PROMPTS[:3], **kw)
    finally:
        smollm_bf16.compile_decode_tokens = saved
    assert smollm_bf16._decode_step_fn is not None and smollm_bf16._decode_step_fn is not smollm_bf16._step
    eager = smollm_bf16.generate(PROMPTS[:3], **kw)  # below compile_decode_tokens: eager steps
    assert sum(a == b for a, b in zip(compiled, eager)) >= 2 and all(compiled)


def test_small_generate_calls_decode_eagerly(smollm_bf16, monkeypatch):
    """Below ``compile_decode_tokens`` new tokens a call never compiles the decode step (the compile costs more
    than it saves there); at or above it, the step is compiled once."""
    if smollm_bf16.compiled_blocks == 0:
        pytest.skip("compile is not active for this model (not CPU bf16)")
    compiled_fns = []
    monkeypatch.setattr(smollm_bf16, "_decode_step_fn", None)
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: compiled_fns.append(fn.__name__) or fn)
    monkeypatch.setattr(smollm_bf16, "compile_decode_tokens", 3 * 8)
    smollm_bf16.generate(PROMPTS[:3], max_new_tokens=7, temperature=0.0)
    assert "_step" not in compiled_fns and smollm_bf16._decode_step_fn is None
    smollm_bf16.generate(PROMPTS[:3], max_new_tokens=8, temperature=0.0)
    assert compiled_fns.count("_step") == 1 and smollm_bf16._decode_step_fn is not None


def test_shared_prefixes_groups_long_common_prefixes():
    from popsim.lm.generate import shared_prefixes

    head = list(range(100, 130))  # 30 shared tokens
    prompts = [head + [1, 2], [7, 8, 9], head + [3], head[:20] + [4, 5], head + [1, 2, 6]]
    shares = shared_prefixes(prompts)
    assert shares[1] == (1, 0)  # shares nothing
    groups = {lead for lead, length in shares if length}
    assert len(groups) == 1 and all(prompts[r][:n] == prompts[lead][:n] for r, (lead, n) in enumerate(shares))
    assert all(n < len(prompts[r]) for r, (_, n) in enumerate(shares))  # each row keeps a token to encode
    # the best split: the four head rows share 20 tokens (60 saved) or three share 30 (60 saved): never less
    assert sum(n for r, (lead, n) in enumerate(shares) if lead != r) >= 60
    assert shared_prefixes([[1] * 40, [2] * 40]) == [(0, 0), (1, 0)]


def test_shared_prefix_prefill_equals_separate_prompts(tiny_lm):
    """Prompts sharing a long prefix (encoded once, then copied) decode as each does alone (greedy, fp32)."""
    head = "You are a person answering a survey. Your persona: a retired teacher who gardens and reads. "
    prompts = [head + "Q: roads?", head + "Q: schools and their teachers?", "Unrelated", head * 2]
    got = tiny_lm.generate(prompts, max_new_tokens=8, temperature=0.0, ignore_eos=True)
    assert got == [hf_greedy(tiny_lm, p, 8) for p in prompts]


def test_smollm_shared_prefix_rows_equal_rows_alone(smollm):
    """fp32 SmolLM2, sampled: chats with the same system message and persona give the same texts together
    (their prefix encoded once) as one by one."""
    persona = "You are a 54-year-old nurse from Ohio who cooks for a large family and likes mystery novels."
    prompts = [Chat.of(f"Write one sentence about {x}.", system=persona) for x in ("coffee", "rain", "trains")]
    kw = dict(max_new_tokens=10, temperature=0.9)
    together = smollm.generate(prompts, seed=[1, 2, 3], **kw)
    alone = [smollm.generate([p], seed=[s], **kw)[0] for p, s in zip(prompts, [1, 2, 3])]
    assert together == alone and len(set(together)) == 3
