"""Compact per-token logit summaries from which log-likelihood at any temperature is recomputed.

The MoP trainer learns a temperature per persona while the LM stays frozen. Re-running the LM every
epoch for the same (record, persona, exemplar) prompt is the dominant cost, so the trainer caches a
:class:`LogitSketch` per scored continuation: for every continuation token, the target token's logit,
the top-``k`` logits, and a histogram of the remaining ``V - k`` logits (count, mean and variance per
bin).
Then

    log p_tau(y_t) = z_y / tau - logsumexp_v(z_v / tau)

is evaluated from the sketch: the top-k terms exactly and each tail bin by its second-order cumulant
expansion ``count * exp(mean / tau + var / (2 tau^2))``. ``tests/test_lm_hf.py`` measures the error
against the full softmax over 0.3 <= tau <= 2 on the real LM (under 1e-3 nats per token).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["LogitSketch", "sketch_logits", "sketch_logprob"]

TOP_K = 32
TAIL_BINS = 64


@dataclass(frozen=True)
class LogitSketch:
    """Logit summary for one continuation (T tokens): arrays (T,), (T, k), then three (T, B) arrays."""

    target: np.ndarray
    top: np.ndarray
    tail_count: np.ndarray
    tail_mean: np.ndarray
    tail_var: np.ndarray

    @property
    def n_tokens(self) -> int:
        return int(self.target.shape[0])


def sketch_logits(
    logits: torch.Tensor, targets: torch.Tensor, *, top_k: int = TOP_K, bins: int = TAIL_BINS
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Summarise fp32 logits of shape (N, V) for target ids (N,) into sketch arrays (batched)."""
    logits = logits.float()
    n, vocab = logits.shape
    top_k = min(top_k, vocab)
    target = logits.gather(1, targets.view(-1, 1)).squeeze(1)
    top, top_idx = logits.topk(top_k, dim=1)
    if top_k == vocab:
        empty = torch.zeros(n, bins)
        return target, top, empty, empty, empty
    # bins span [min logit, k-th largest]; the top-k go to a spare last bin that is dropped, so every pass
    # runs over the whole (N, V) block without masks or copies (4x faster than masking them out)
    lo = logits.amin(dim=1, keepdim=True)
    width = (top[:, -1:] - lo).clamp_min(1e-6) / bins
    bin_idx = (logits - lo).div_(width).floor_().clamp_(0, bins - 1).long()
    bin_idx.scatter_(1, top_idx, bins)
    count, total, squares = (torch.zeros(n, bins + 1).scatter_add_(1, bin_idx, src)[:, :bins]
                             for src in (torch.ones(1).expand(n, vocab), logits, logits * logits))
    mean = torch.where(count > 0, total / count.clamp_min(1), torch.zeros_like(total))
    var = torch.where(count > 0, squares / count.clamp_min(1) - mean * mean, torch.zeros_like(total))
    return target, top, count, mean, var.clamp_min(0)


def sketch_logprob(sketches: list[LogitSketch], temperature: torch.Tensor) -> torch.Tensor:
    """Sum over tokens of log p_tau(y_t) for each sketch; differentiable in ``temperature`` (shape (R,))."""
    lengths = [s.n_tokens for s in sketches]
    target = torch.from_numpy(np.concatenate([s.target for s in sketches])).float()
    top = torch.from_numpy(np.concatenate([s.top for s in sketches])).float()
    count = torch.from_numpy(np.concatenate([s.tail_count for s in sketches])).float()
    mean = torch.from_numpy(np.concatenate([s.tail_mean for s in sketches])).float()
    var = torch.from_numpy(np.concatenate([s.tail_var for s in sketches])).float()
    row = torch.repeat_interleave(torch.arange(len(sketches)), torch.tensor(lengths))
    tau = temperature.reshape(-1)[row].unsqueeze(1)
    log_count = torch.where(count > 0, count.log(), torch.full_like(count, -torch.inf))
    terms = torch.cat([top / tau, log_count + mean / tau + var / (2 * tau * tau)], dim=1)
    per_token = target / tau.squeeze(1) - torch.logsumexp(terms, dim=1)
    out = torch.zeros(len(sketches), dtype=per_token.dtype).index_add(0, row, per_token)
    return out
