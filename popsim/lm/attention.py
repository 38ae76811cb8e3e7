"""Attention for short sequences on CPU inside compiled decoder layers: two batched matmuls and a fused softmax.

PyTorch's CPU flash-attention kernel splits every (row, head) into 32-query blocks and multiplies each
with its own tiny GEMM. For popsim's scoring passes (a few hundred tokens per row, head size 64) those
GEMMs reach ~120 GFLOP/s in bf16 where one batched matmul over all heads reaches ~400, and attention took a
fifth of a SmolLM2 scoring pass. Inside a ``torch.compile``'d layer (:mod:`popsim.lm.compile`) this module
instead computes ``softmax(q k^T * scale + mask) v`` with the grouped query heads folded into the query
axis (no ``repeat_kv`` copies), and Inductor fuses the upcast, scaling, masking, softmax and downcast into
one loop between the two matmuls: 12 ms against 20 ms for the flash kernel on a 32 x 134-token bf16
batch of SmolLM2's 9 heads (2 cores).

Prefix trees (:mod:`popsim.lm.prefix_tree`) are mostly empty masks: an agent's ~250-token prefix followed
by 16 questions of ~60 tokens, each of which sees the prefix and itself only. A dense pass over such a
tree computes every (query, key) score, so trees were capped at 512 tokens and long prefixes were encoded
again in every tree. With :func:`tile_layout` the caller passes, per 64-query tile, the key tiles that
hold any allowed entry; attention then multiplies each query tile with those key tiles only (gathered
eagerly, then one batched matmul), which is exact (a skipped tile is fully masked) and lets a whole agent
be one tree. A non-voters MoP population step (30 agents x 16 questions, 4 options, one core) took 72 s
against 113 s with dense 512-token trees; agents with 8 questions break even (``benchmarks/prefix_reuse.py``).

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
    ``tree_tiles`` / ``tree_tile_mask`` (from :func:`tile_layout`, passed through the model's forward
    kwargs) restrict each query tile to the key tiles it needs.
    """
    tiles, tile_mask = kwargs.pop("tree_tiles", None), kwargs.pop("tree_tile_mask", None)
    if not _handles(query, key, attention_mask, dropout, kwargs):
        return _sdpa(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    if tiles is not None and query.shape[2] == key.shape[2]:
        return _tiled_attention(query, key, value, tiles, tile_mask, scaling)
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


@torch.compiler.disable
def _gather_tiles(key: torch.Tensor, value: torch.Tensor, tiles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each query tile's key and value tiles, (batch, kv_heads, n_tiles, per_tile * TILE, dim) each.

    Run eagerly: Inductor fused the gather with the rotary embedding into a kernel that took longer than
    the eager gather plus the rest of attention (105 vs 65 ms per call on 2 x 1024 tokens, 7 of 16 tiles).
    """
    batch, kv_heads, _, dim = key.shape
    n_tiles, per_tile = tiles.shape[1], tiles.shape[2]
    index = tiles.reshape(batch, 1, n_tiles * per_tile, 1).expand(batch, kv_heads, n_tiles * per_tile, TILE * dim)
    shape = (batch, kv_heads, n_tiles, per_tile * TILE, dim)
    return (key.reshape(batch, kv_heads, n_tiles, TILE * dim).gather(2, index).view(shape),
            value.reshape(batch, kv_heads, n_tiles, TILE * dim).gather(2, index).view(shape))


def _tiled_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, tiles: torch.Tensor,
                     tile_mask: torch.Tensor, scaling: float | None) -> tuple[torch.Tensor, None]:
    """Attention over the key tiles each query tile needs: (batch, heads, q, d) -> (batch, q, heads, d)."""
    batch, heads, q_len, dim = query.shape
    kv_heads = key.shape[1]
    group = heads // kv_heads
    n_tiles = tiles.shape[1]
    scale = dim**-0.5 if scaling is None else scaling
    keys, values = _gather_tiles(key, value, tiles)
    # query heads sharing a kv head stacked within each tile: (batch, kv_heads, n_tiles, group * TILE, dim)
    folded = query.view(batch, kv_heads, group, n_tiles, TILE, dim).transpose(2, 3)
    folded = folded.reshape(batch, kv_heads, n_tiles, group * TILE, dim)
    scores = torch.matmul(folded, keys.transpose(-1, -2)).view(batch, kv_heads, n_tiles, group, TILE, -1)
    bias = torch.where(tile_mask, 0.0, torch.finfo(torch.float32).min).unsqueeze(1).unsqueeze(3)
    scores = scores.float() * scale + bias
    probs = scores.softmax(dim=-1).to(value.dtype).view(batch, kv_heads, n_tiles, group * TILE, -1)
    out = torch.matmul(probs, values).view(batch, kv_heads, n_tiles, group, TILE, dim)
    out = out.transpose(2, 3).reshape(batch, heads, q_len, dim)
    return out.transpose(1, 2).contiguous(), None


def tile_layout(allowed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Which key tiles each query tile of a (batch, width, width) boolean mask needs.

    Returns ``(tiles, tile_mask)``: ``tiles`` (batch, n_tiles, per_tile) key-tile indices, ``tile_mask``
    (batch, n_tiles, TILE, per_tile * TILE) the mask entries of those tiles (padding slots all False).
    ``None`` when ``width`` is not a multiple of :data:`TILE` or no query tile can skip a key tile.
    Every row must allow at least one key (its own diagonal), so no softmax row is empty.
    """
    batch, width, _ = allowed.shape
    if width % TILE:
        return None
    n_tiles = width // TILE
    blocks = allowed.view(batch, n_tiles, TILE, n_tiles, TILE)
    used = blocks.any(dim=4).any(dim=2)  # (batch, query tile, key tile)
    counts = used.sum(dim=2)
    per_tile = int(counts.max())
    if per_tile == n_tiles:
        return None
    # the used key tiles first, in order (a stable sort on "unused"), then padding slots
    tiles = torch.sort((~used).to(torch.int8), dim=2, stable=True).indices[:, :, :per_tile]
    valid = torch.arange(per_tile, device=allowed.device) < counts.unsqueeze(2)
    tiles = torch.where(valid, tiles, 0)
    index = tiles.view(batch, n_tiles, 1, per_tile, 1).expand(batch, n_tiles, TILE, per_tile, TILE)
    tile_mask = blocks.gather(3, index) & valid.view(batch, n_tiles, 1, per_tile, 1)
    return tiles, tile_mask.reshape(batch, n_tiles, TILE, per_tile * TILE)


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
