"""Attention for short sequences on CPU inside compiled decoder layers: two batched matmuls and a fused softmax.

PyTorch's CPU flash-attention kernel splits every (row, head) into 32-query blocks and multiplies each
with its own tiny GEMM. For popsim's scoring passes (a few hundred tokens per row, head size 64) those
GEMMs reach ~120 GFLOP/s in bf16 where one batched matmul over all heads reaches ~400, and attention took a
fifth of a SmolLM2 scoring pass. Inside a ``torch.compile``'d layer (:mod:`popsim.lm.compile`) this module
instead computes ``softmax(q k^T * scale + mask) v`` with the grouped query heads folded into the query
axis (no ``repeat_kv`` copies), and Inductor fuses the upcast, scaling, masking, softmax and downcast into
one loop between the two matmuls: 12 ms against 20 ms for the flash kernel on a 32 x 134-token bf16
batch of SmolLM2's 9 heads (2 cores).

Everywhere else (eager calls, generation's KV-cached steps, masks or options it does not handle) it
defers to transformers' SDPA path unchanged, so registering it changes no results outside compiled
scoring, where it differs from SDPA only by bf16 rounding of the scores.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["ATTENTION_NAME", "register_attention", "short_sequence_attention"]

ATTENTION_NAME = "popsim_sdpa"


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
    """
    if not _handles(query, key, attention_mask, dropout, kwargs):
        return _sdpa(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
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
