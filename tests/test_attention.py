"""The compiled short-sequence attention equals SDPA on the masks popsim's scoring passes produce."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import popsim.lm.hf as hf
from popsim.lm.attention import ATTENTION_NAME, short_sequence_attention, tile_layout
from popsim.lm.hf import HFLanguageModel

HEADS, KV_HEADS, DIM = 6, 2, 16
MODULE = types.SimpleNamespace(num_key_value_groups=HEADS // KV_HEADS, training=False)


def _inputs(batch: int, length: int, dtype: torch.dtype, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, HEADS, length, DIM, generator=g).to(dtype)
    k = torch.randn(batch, KV_HEADS, length, DIM, generator=g).to(dtype)
    v = torch.randn(batch, KV_HEADS, length, DIM, generator=g).to(dtype)
    return q, k, v


def _padded_mask(lengths: list[int], width: int) -> torch.Tensor:
    """SDPA's right-padding mask: causal, and no query sees a padding key (padding queries see real keys)."""
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    keys = torch.arange(width) < torch.tensor(lengths).unsqueeze(1)
    return (causal & keys[:, None, :]).unsqueeze(1)


def _tree_of(prefix: int, branches: list[int], width: int) -> torch.Tensor:
    """(1, 1, width, width): a prefix, then branches that each see the prefix and themselves, then padding."""
    seg = torch.tensor([0] * prefix + [b + 1 for b, n in enumerate(branches) for _ in range(n)])
    visible = torch.eye(len(branches) + 1, dtype=torch.bool)
    visible[:, 0] = True
    allowed = torch.eye(width, dtype=torch.bool)
    n = len(seg)
    allowed[:n, :n] = visible[seg.unsqueeze(1), seg.unsqueeze(0)] & torch.ones(n, n, dtype=torch.bool).tril()
    return allowed.view(1, 1, width, width)


def _tree_mask(width: int) -> torch.Tensor:
    """Two rows of a 5-token prefix shared by two 4-token branches, plus padding rows."""
    return _tree_of(5, [4, 4], width).expand(2, 1, width, width)


def _reference(q, k, v, mask):
    out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask,
                                         is_causal=mask is None, enable_gqa=True)
    return out.transpose(1, 2)


@pytest.mark.parametrize("case", ["causal", "padded", "tree"])
def test_compiled_short_attention_equals_sdpa(case):
    width = 16
    mask = {"causal": None, "padded": _padded_mask([16, 11], width), "tree": _tree_mask(width)}[case]
    compiled = torch.compile(short_sequence_attention, dynamic=True)
    q, k, v = _inputs(2, width, torch.float32)
    out, weights = compiled(MODULE, q, k, v, mask, scaling=DIM**-0.5)
    assert weights is None and out.shape == (2, width, HEADS, DIM)
    assert torch.isfinite(out).all()  # padding rows of the tree mask attend to themselves only
    torch.testing.assert_close(out, _reference(q, k, v, mask), atol=1e-5, rtol=1e-5)
    qb, kb, vb = (t.bfloat16() for t in (q, k, v))
    out_bf16, _ = compiled(MODULE, qb, kb, vb, mask, scaling=DIM**-0.5)
    assert (out_bf16.float() - _reference(qb, kb, vb, mask)).abs().max() < 0.05


def test_eager_calls_defer_to_sdpa_exactly():
    q, k, v = _inputs(2, 12, torch.float32, seed=1)
    mask = _padded_mask([12, 7], 12)
    out, _ = short_sequence_attention(MODULE, q, k, v, mask, scaling=DIM**-0.5)
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    expected, _ = sdpa_attention_forward(MODULE, q, k, v, mask, scaling=DIM**-0.5)
    assert torch.equal(out, expected)


def test_compiled_bf16_smollm_scores_through_short_attention(smollm_bf16, smollm):
    """The real model on the default bf16 CPU path uses it, and cache-free scoring agrees with fp32."""
    if smollm_bf16.device.type != "cpu":
        pytest.skip("the compiled path is CPU-only")
    assert smollm_bf16.short_attention and smollm_bf16.model.config._attn_implementation == ATTENTION_NAME
    prompts = ["Q: Is it warm in July in Spain?\nA:", "Q: Do cats bark?\nA:"] * 3
    answers = [" Yes", " No", " Yes, very warm", " No, they meow", " Sometimes", " Never"]
    smollm_bf16.prefix_sharing = False
    try:
        got = smollm_bf16.score(prompts, answers)
    finally:
        smollm_bf16.prefix_sharing = True
    ref = smollm.score(prompts, answers)
    assert (got - ref).abs().max() < 0.5, (got, ref)


def test_scoring_batch_size_does_not_change_scores(tiny_lm_dir):
    """Small scoring batches (the CPU default) give the same scores as one big batch."""
    small = HFLanguageModel(str(tiny_lm_dir), dtype="fp32", score_batch_tokens=32)
    big = HFLanguageModel(str(tiny_lm_dir), dtype="fp32", score_batch_tokens=100_000)
    prompts = [f"Question {i}: how many apples are there in basket {i}?" for i in range(6)]
    answers = [" three", " none at all", " a dozen or so", " two", " seven", " many"]
    torch.testing.assert_close(small.score(prompts, answers), big.score(prompts, answers), atol=1e-5, rtol=0)
    default = HFLanguageModel(str(tiny_lm_dir), dtype="fp32")
    assert default.score_batch_tokens == (2048 if default.device.type == "cpu" else default.batch_tokens)


def _wide_trees() -> torch.Tensor:
    """Two trees with different prefixes (150 and 200 tokens) and branches of up to two tiles."""
    return torch.cat([_tree_of(150, [100, 90, 70], 448), _tree_of(200, [120, 60, 40], 448)])


def test_tile_layout_splits_a_tree_mask_into_strip_and_band():
    # two trees whose branches never see each other: key tile 0 is the strip, each query tile's own the band
    mask = torch.cat([_tree_of(60, [68, 50], 192), _tree_of(64, [64, 64], 192)])
    strip_mask, band_mask = tile_layout(mask[:, 0])
    assert strip_mask.shape == (2, 3, 64, 64) and band_mask.shape == (2, 3, 64, 64)
    assert int(strip_mask.sum()) + int(band_mask.sum()) == int(mask.sum())  # each allowed entry exactly once
    assert not band_mask[:, 0].any()  # query tile 0 lies in the strip: its band slot is masked out
    wide = _wide_trees()[:, 0]
    strip_mask, band_mask = tile_layout(wide)
    assert strip_mask.shape[-1] >= 128 and band_mask.shape[-1] >= 128  # several tiles in both parts
    assert strip_mask.shape[-1] + band_mask.shape[-1] < wide.shape[-1]
    assert int(strip_mask.sum()) + int(band_mask.sum()) == int(wide.sum())
    assert tile_layout(torch.ones(1, 256, 256, dtype=torch.bool).tril()) is None  # causal: nothing to skip
    assert tile_layout(mask[:, 0, :100, :100]) is None  # not whole tiles
    later = wide.clone()
    later[0, 10, 300] = True  # a query reading a later tile: the band cannot hold it
    assert tile_layout(later) is None


@pytest.mark.parametrize("case", ["one-tile parts", "wide parts"])
def test_strip_band_attention_equals_sdpa(case):
    if case == "one-tile parts":
        mask = torch.cat([_tree_of(60, [68, 50], 192), _tree_of(40, [88, 60], 192)])
    else:
        mask = _wide_trees()
    strip_mask, band_mask = tile_layout(mask[:, 0])
    assert strip_mask.shape[-1] + band_mask.shape[-1] < mask.shape[-1]
    compiled = torch.compile(short_sequence_attention, dynamic=True)
    q, k, v = _inputs(2, mask.shape[-1], torch.float32, seed=2)
    out, _ = compiled(MODULE, q, k, v, mask, scaling=DIM**-0.5, tree_strip_mask=strip_mask, tree_band_mask=band_mask)
    torch.testing.assert_close(out, _reference(q, k, v, mask), atol=1e-5, rtol=1e-5)


def test_tiled_prefix_trees_score_as_every_prompt_in_full(tiny_lm_dir, monkeypatch):
    """Compiled fp32 scoring with tiled trees (one 2048-token tree per agent, strip + band attention)
    equals scoring each (prompt, option) in full: agents with a long shared prefix and many questions."""
    lm = HFLanguageModel(str(tiny_lm_dir), dtype="fp32", compile="on")
    if lm.device.type != "cpu" or lm.compiled_blocks == 0:
        pytest.skip("tiling needs compiled CPU scoring (no compiler here)")
    assert lm.tiled_trees and lm.max_tree_tokens == 2048  # its own compile did not fail
    prompts, options = [], []
    for agent in range(2):
        prefix = f"Respondent {agent}: " + "a careful reader who answers every question honestly. " * 12
        for q in range(10):
            prompts.append(prefix + f"Q{q}: how important is item {q}? A:")
            options.append([" very", " somewhat", " not so", " not at all important"])
    layouts = []
    real_layout = hf.tile_layout

    def spy(mask):
        layouts.append(real_layout(mask))
        return layouts[-1]

    monkeypatch.setattr(hf, "tile_layout", spy)
    tree = lm.option_logprobs(prompts, options)
    assert any(layout is not None for layout in layouts)  # key tiles were skipped
    lm.prefix_sharing = False
    full = lm.option_logprobs(prompts, options)
    for a, b in zip(tree, full, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_real_smollm_tiled_trees_equal_dense_trees(smollm_bf16):
    """On the default bf16 CPU path SmolLM2 scores a survey agent as one tiled tree; its option distributions
    agree with those of dense 512-token trees within bf16 rounding (TV < 0.02, same top option)."""
    if smollm_bf16.device.type != "cpu" or smollm_bf16.compiled_blocks == 0:
        pytest.skip("the tiled path needs compiled CPU scoring")
    assert smollm_bf16.tiled_trees
    prefix = "Survey interview transcript.\n" + "Q: Are we spending too much on parks?\nA: about right\n" * 8
    prompts = [prefix + f"Q: Are we spending too much, too little or about right on item {i}?\nA:" for i in range(14)]
    options = [[" too little", " about right", " too much"]] * len(prompts)
    tiled = smollm_bf16.option_logprobs(prompts, options)
    old = smollm_bf16.max_tree_tokens
    try:
        smollm_bf16.max_tree_tokens, smollm_bf16.tree_tiles = 512, False
        dense = smollm_bf16.option_logprobs(prompts, options)
    finally:
        smollm_bf16.max_tree_tokens, smollm_bf16.tree_tiles = old, True
    for a, b in zip(tiled, dense, strict=True):  # bf16 moves rare options' log-probs, not the distribution
        assert 0.5 * np.abs(np.exp(a) - np.exp(b)).sum() < 0.02 and a.argmax() == b.argmax()
    assert not all(np.allclose(a, tiled[0]) for a in tiled[1:])
