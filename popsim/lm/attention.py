"""Attention for short sequences on CPU inside compiled decoder layers: two batched matmuls and a fused softmax.

PyTorch's CPU flash-attention kernel splits every (row, head) into 32-query blocks and multiplies each
with its own tiny GEMM. For popsim's scoring passes (a few hundred tokens per row, head size 64) those
GEMMs reach ~120 GFLOP/s in bf16 where one batched matmul over all heads reaches ~400, and attention took a
fifth of a SmolLM2 scoring pass. Inside a ``torch.compile``'d layer (:mod:`popsim.lm.compile`) this module
instead computes ``softmax(q k^T * scale + mask) v`` with the grouped query heads folded into the query
axis (no ``repeat_kv`` copies), and Inductor fuses the upcast, scaling, masking, softmax and downcast into
one loop between the two matmuls: 12 ms against 20 ms for the flash kernel on a 32 x 134-token bf16
batch of SmolLM2's 9 heads (2 cores).

Prefix trees (:mod:`popsim.lm.prefix_tree`) are mostly empty masks: an agent's ~300-token prefix followed
by 16 questions of ~60 tokens, each of which sees the prefix and itself only. A dense pass over such a
tree computes every (query, key) score, so trees were capped at 512 tokens and long prefixes were encoded
again in every tree. :func:`tile_layout` splits the mask, over 64 x 64 tiles, into a key *strip* (the first
tiles, the prefix) that every query reads and a diagonal *band* of key tiles ending at each query tile (its
question); attention then runs as one large matmul against the strip, one against an unfolded view of the
band, and one softmax over both (:func:`_strip_band_attention`). It is exact - for masks that are causal
by tile, as tree masks are, the parts cover every allowed entry once - and lets a whole agent be one
tree: a non-voters MoP population step (30 agents x 16 questions x 4 options, one core) took 60 s
against 113 s with dense 512-token trees. An earlier version
gathered each query tile's key tiles instead; the gather made its attention cost 65-73 ms per layer call on
2 x 1024 tokens against 32 ms for the strip and band (dense 512-token trees: ~35 ms per 2048 tokens).

Everywhere else (eager calls, generation's KV-cached steps, masks or options it does not handle) it
defers to transformers' SDPA path unchanged, so registering it changes no results outside compiled
scoring, where it differs from SDPA only by bf16 rounding of the scores.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["ATTENTION_NAME", "TILE", "register_attention", "short_sequence_attention", "tile_layout"]

ATTENTION_NAME = "popsim_sdpa"
TILE = 64  # queries and keys per tile of a tree mask; a width a multiple of it is tiled


def _sdpa(*args: Any, **kwargs: Any) -> tuple[torch.Tensor, None]:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(*args, **kwargs)


def _handles(query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None, dropout: float,
             kwargs: dict[str, Any]) -> bool:
    if not torch.compiler.is_compiling() or query.device.type != "cpu" or dropout:
        return False
    if any(kwargs.get(name) is not None for name in ("softcap", "s_aux", "sinks", "position_bias")):
        return False
    if query.shape[1] % key.shape[1]:
        return False
    if mask is None:  # transformers drops the mask when plain causal attention is exact
        return query.shape[2] == key.shape[2] and kwargs.get("is_causal", True) is not False
    return mask.dtype == torch.bool and mask.dim() == 4 and mask.shape[1] == 1


def short_sequence_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """A transformers attention function: (batch, heads, q, d) inputs, (batch, q, heads, d) output.

    ``attention_mask`` is SDPA's: ``None`` (causal) or a boolean (batch, 1, q, kv) mask, True = attend.
    ``tree_strip_mask`` / ``tree_band_mask`` (from :func:`tile_layout`, passed through the model's forward
    kwargs) restrict each query tile to a shared key strip and its own band of key tiles.
    """
    strip_mask, band_mask = kwargs.pop("tree_strip_mask", None), kwargs.pop("tree_band_mask", None)
    if not _handles(query, key, attention_mask, dropout, kwargs):
        return _sdpa(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    if strip_mask is not None and query.shape[2] == key.shape[2]:
        return _strip_band_attention(query, key, value, strip_mask, band_mask, scaling)
    batch, heads, q_len, dim = query.shape
    kv_heads, kv_len = key.shape[1], key.shape[2]
    group = heads // kv_heads
    scale = dim**-0.5 if scaling is None else scaling
    if attention_mask is None:
        allowed = torch.ones(q_len, kv_len, dtype=torch.bool, device=query.device).tril(kv_len - q_len)
        allowed = allowed.view(1, 1, 1, q_len, kv_len)
    else:
        allowed = attention_mask.unsqueeze(1)  # (batch, 1, 1, q, kv): shared by every head
    # query heads that share a key/value head are stacked along the query axis: one matmul per kv head
    folded = query.reshape(batch, kv_heads, group * q_len, dim)
    scores = torch.matmul(folded, key.transpose(-1, -2)).view(batch, kv_heads, group, q_len, kv_len)
    # an additive bias (finfo.min rather than -inf: a fully masked row gets a uniform softmax, not NaN)
    bias = torch.where(allowed, 0.0, torch.finfo(torch.float32).min)
    scores = scores.float() * scale + bias
    probs = scores.softmax(dim=-1).to(value.dtype).view(batch, kv_heads, group * q_len, kv_len)
    out = torch.matmul(probs, value).view(batch, heads, q_len, dim)
    return out.transpose(1, 2).contiguous(), None


def _strip_band_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, prefix_mask: torch.Tensor,
                          band_mask: torch.Tensor, scaling: float | None) -> tuple[torch.Tensor, None]:
    """Attention over a key strip shared by every query plus a diagonal band of key tiles per query tile.

    (batch, heads, q, d) -> (batch, q, heads, d). The strip is one large matmul for all queries; the band is
    an unfolded (strided) view of the keys, ``band`` tiles wide, ending at each query tile. The two parts'
    softmaxes are merged through a shared maximum, so the result is softmax over their union.
    """
    batch, heads, q_len, dim = query.shape
    kv_heads = key.shape[1]
    group = heads // kv_heads
    n_tiles, strip, band = prefix_mask.shape[1], prefix_mask.shape[3], band_mask.shape[3]
    scale = dim**-0.5 if scaling is None else scaling
    floor = torch.finfo(torch.float32).min
    # query heads sharing a kv head stacked within each tile: (batch, kv_heads, n_tiles, group * TILE, dim)
    folded = query.view(batch, kv_heads, group, n_tiles, TILE, dim).transpose(2, 3)
    folded = folded.reshape(batch, kv_heads, n_tiles, group * TILE, dim)
    strip_scores = torch.matmul(folded.reshape(batch, kv_heads, -1, dim), key[:, :, :strip].transpose(-1, -2))
    strip_scores = strip_scores.view(batch, kv_heads, n_tiles, group, TILE, strip).float() * scale
    strip_scores = strip_scores + torch.where(prefix_mask, 0.0, floor).unsqueeze(1).unsqueeze(3)
    pad = (0, 0, band - TILE, 0)  # band - TILE keys before position 0, so tile 0's band starts in range
    band_keys = torch.nn.functional.pad(key, pad).unfold(2, band, TILE)  # (batch, kv_heads, n_tiles, dim, band)
    band_values = torch.nn.functional.pad(value, pad).unfold(2, band, TILE).transpose(-1, -2)
    band_scores = torch.matmul(folded, band_keys).view(batch, kv_heads, n_tiles, group, TILE, band).float() * scale
    band_scores = band_scores + torch.where(band_mask, 0.0, floor).unsqueeze(1).unsqueeze(3)
    top = torch.maximum(strip_scores.amax(-1, keepdim=True), band_scores.amax(-1, keepdim=True))
    strip_weights, band_weights = (strip_scores - top).exp(), (band_scores - top).exp()
    total = strip_weights.sum(-1, keepdim=True) + band_weights.sum(-1, keepdim=True)
    out = torch.matmul(strip_weights.to(value.dtype).view(batch, kv_heads, -1, strip), value[:, :, :strip])
    out = out.view(batch, kv_heads, n_tiles, group, TILE, dim).float()
    band_out = torch.matmul(band_weights.to(value.dtype).view(batch, kv_heads, n_tiles, group * TILE, band),
                            band_values)
    out = (out + band_out.view(batch, kv_heads, n_tiles, group, TILE, dim).float()) / total
    out = out.to(value.dtype).transpose(2, 3).reshape(batch, heads, q_len, dim)
    return out.transpose(1, 2).contiguous(), None


def tile_layout(allowed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Split a (batch, width, width) boolean mask into a key strip every query reads and a diagonal band.

    Over 64 x 64 tiles, picks the strip of the first ``p`` key tiles and the band of ``b`` key tiles ending
    at each query tile (tiles before the strip's end excluded) that together cover every allowed entry with
    the fewest key tiles per query tile. Returns ``(strip_mask, band_mask)``: (batch, n_tiles, TILE,
    p * TILE) and (batch, n_tiles, TILE, b * TILE), the mask entries of both parts; ``None`` when the width
    is not whole tiles, a query tile reads a later key tile (masks must be causal by tile, as tree masks
    are), or the split would read as many key tiles as the dense mask. Every row must allow a key (its own
    diagonal), so no softmax row is empty.
    """
    batch, width, _ = allowed.shape
    if width % TILE:
        return None
    n_tiles = width // TILE
    blocks = allowed.view(batch, n_tiles, TILE, n_tiles, TILE)
    used = blocks.any(dim=4).any(dim=2).any(dim=0)  # (query tile, key tile), over the whole batch
    if used.triu(1).any():  # a query tile reads a later key tile: the band (which ends at its own) cannot
        return None
    tile = torch.arange(n_tiles, device=allowed.device)
    best = (n_tiles, 0, 0)
    for strip in range(1, n_tiles):
        after = used & (tile >= strip)  # key tiles the band has to cover
        first = torch.where(after, tile, n_tiles).amin(dim=1)
        reach = (tile - first)[after.any(dim=1)]
        band = int(reach.max()) + 1 if reach.numel() else 1
        if strip + band < best[0]:
            best = (strip + band, strip, band)
    _, strip, band = best
    if not strip:
        return None
    strip_mask = allowed[:, :, : strip * TILE].reshape(batch, n_tiles, TILE, strip * TILE)
    keys = tile.unsqueeze(1) - band + 1 + torch.arange(band, device=allowed.device)  # (query tile, slot)
    band_mask = blocks[:, tile.unsqueeze(1), :, keys.clamp(min=0), :]  # (query tile, slot, batch, TILE, TILE)
    band_mask = band_mask.permute(2, 0, 3, 1, 4) & (keys >= strip).view(1, n_tiles, 1, band, 1)
    return strip_mask, band_mask.reshape(batch, n_tiles, TILE, band * TILE)


def register_attention(model: torch.nn.Module) -> bool:
    """Switch an SDPA model to :func:`short_sequence_attention` (same masks as SDPA); True if switched.

    Models on another implementation, and transformers versions without the attention/mask registries,
    are left as they are.
    """
    config = getattr(model, "config", None)
    if config is None or getattr(config, "_attn_implementation", None) != "sdpa":
        return False
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    except ImportError:
        return False
    AttentionInterface.register(ATTENTION_NAME, short_sequence_attention)
    AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)
    try:
        model.set_attn_implementation(ATTENTION_NAME)
    except (AttributeError, ValueError):
        return False
    return config._attn_implementation == ATTENTION_NAME
