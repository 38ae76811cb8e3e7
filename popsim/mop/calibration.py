"""Calibrated priors for MoP's gates: logit biases that make the gates' average use match a target.

The exemplar pool is a random sample of the records, so a gate read as a posterior over "which pool member
is this context like" must, averaged over the contexts, give every member the same share (Bayes); a
softmax over similarities does not, and keeps returning the exemplars that resemble every context. The
same argument gives each persona its cluster's share of the pool. Only each item's overall popularity
changes: how much more one context prefers an item than another context does (the odds ratio) is kept.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch

from popsim.mop.gating import exemplar_marginal
from popsim.mop.objective import own_exemplar_mask
from popsim.records import Records

if TYPE_CHECKING:
    from popsim.mop.model import MixtureOfPersonas

__all__ = ["persona_prior", "persona_centroids", "calibrated_persona_bias", "calibrated_exemplar_bias",
           "sinkhorn_bias"]


def _calibration_contexts(
    model: MixtureOfPersonas, records: Records, max_contexts: int = 1024
) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """(rows, h(x), normalised weights) of up to ``max_contexts`` records (a seeded sample of its own,
    so calibrating leaves the training's random stream alone)."""
    rows = np.arange(len(records))
    if len(rows) > max_contexts:
        rng = np.random.default_rng([model.random_state, 17])
        rows = np.sort(rng.choice(rows, max_contexts, replace=False))
    h_x = torch.from_numpy(model.encoder.encode([records.gate_inputs[i] for i in rows]))
    w = torch.from_numpy(records.weights[rows]).float()
    return rows, h_x, w / w.sum()


def persona_prior(model: MixtureOfPersonas) -> torch.Tensor:
    """Each persona's share of the exemplar pool (its K-means cluster's size); uniform for user personas."""
    n_k = len(model.personas_)
    if model.persona_labels_ is None:
        return torch.full((n_k,), 1.0 / n_k)
    counts = np.bincount(np.asarray(model.persona_labels_), minlength=n_k).astype(np.float32)
    return torch.from_numpy(counts / counts.sum())


def persona_centroids(model: MixtureOfPersonas) -> torch.Tensor:
    """c_k: the mean pair embedding of persona k's exemplars (its description's embedding for user personas)."""
    if model.persona_labels_ is None:
        return model.h_g_.float()
    labels = torch.from_numpy(np.asarray(model.persona_labels_))
    return torch.stack([model.h_e_[labels == k].float().mean(0) for k in range(len(model.personas_))])


@torch.no_grad()
def calibrated_persona_bias(model: MixtureOfPersonas, records: Records) -> torch.Tensor:
    """Per-persona logit biases b with sum_x w_x softmax_k(x~ . g~_k + b_k) = the persona's prior share."""
    _, h_x, w = _calibration_contexts(model, records)
    logits = model.gate_.persona_logits(h_x, model.h_g_)
    return sinkhorn_bias(lambda bias: (w[:, None] * (logits + bias).softmax(-1)).sum(0),
                         1 / persona_prior(model).clamp_min(1e-12))


@torch.no_grad()
def calibrated_exemplar_bias(model: MixtureOfPersonas, records: Records, *, chunk: int = 128) -> torch.Tensor:
    """Per-exemplar logit biases b with sum_x w_x sum_k pi_k(x) softmax_j(logit_kj(x) + b_j) = 1/N.

    Over up to 1,024 of the records (weighted), each record's own exemplar masked, pi with its
    calibrated bias if any.
    """
    rows, h_x, w = _calibration_contexts(model, records)
    mask = own_exemplar_mask(records.groups[rows], model.exemplars_.groups)
    n_ex = model.h_e_.shape[0]

    def shares(bias: torch.Tensor) -> torch.Tensor:
        share = torch.zeros(n_ex)
        for a in range(0, len(rows), chunk):
            log_pi, log_omega = model.gate_(h_x[a : a + chunk], model.h_g_, model.h_e_, mask[a : a + chunk], bias,
                                            persona_bias=model.persona_bias_)
            share += (w[a : a + chunk, None] * exemplar_marginal(log_pi, log_omega)).sum(0)
        return share

    return sinkhorn_bias(shares, torch.full((n_ex,), float(n_ex)))


def sinkhorn_bias(
    shares: Callable[[torch.Tensor], torch.Tensor], inverse_target: torch.Tensor, *, steps: int = 200,
    tol: float = 1e-3,
) -> torch.Tensor:
    """Logit biases b with shares(b) = target, by Sinkhorn's column step (the softmax is the row step).

    Each step divides every item's weight by its share over its target (``shares(b) * inverse_target``)
    until no ratio is off 1 by more than ``tol``; b is kept centred (a constant shift changes nothing).
    """
    bias = torch.zeros(len(inverse_target))
    for _ in range(steps):
        ratio = shares(bias) * inverse_target
        if float((ratio - 1).abs().max()) < tol:
            break
        bias -= ratio.clamp_min(1e-12).log()
        bias -= bias.mean()
    return bias
