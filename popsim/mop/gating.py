"""The learned part of MoP: persona gate, exemplar gate and per-persona temperatures (the LM stays frozen).

With h() the frozen sentence encoder (Bui et al. 2025, Sec. 3):

    x~ = W_x h(x),   g~_k = W_g h(g_k),   e~_j = W_e h(x_j, y_j)
    pi_k(x)      = softmax_k(x~ . g~_k)                         (persona gate)
    Omega_kj(x)  = softmax_j(x~ . e~_j + g~_k . e~_j)           (exemplar gate, per persona)
    tau_k        = exp(log_tau_k), initialised at 0.6           (kept positive)

The paper does not say how W is initialised. PyTorch's default (independent random W_x, W_g, W_e) makes
every gate a random function of x at the start, so with the few epochs an LM-scored objective affords the
gates stay near random and MoP behaves like the uniform mixture. :meth:`MixtureGate.init_similarity`
starts W_x and W_e at the same scaled principal directions of the embeddings instead, so x~ . e~_j starts
as (a multiple of) the similarity of context and exemplar: the exemplar gate begins as nearest-neighbour
retrieval. W_g starts at zero, so the persona gate starts uniform (persona descriptions written by a small
LM are alike, and a similarity-initialised persona gate sent every context to the same persona); its
gradient is not zero there, so training moves it. Or :meth:`MixtureGate.init_persona_targets` starts it
as a soft assignment of the context to the personas' clusters (g~_k = W_e c_k, c_k the mean embedding of
persona k's exemplars), which needs the calibrated persona prior (``persona_bias``) to keep central
clusters from taking every context.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["MixtureGate", "exemplar_marginal"]


class MixtureGate(nn.Module):
    """Projections W_x, W_g, W_e (encoder dim -> ``dim``) and one log-temperature per persona."""

    def __init__(self, in_dim: int, n_personas: int, *, dim: int = 128, tau_init: float = 0.6) -> None:
        super().__init__()
        self.W_x = nn.Linear(in_dim, dim, bias=False)
        self.W_g = nn.Linear(in_dim, dim, bias=False)
        self.W_e = nn.Linear(in_dim, dim, bias=False)
        self.log_tau = nn.Parameter(torch.full((n_personas,), math.log(tau_init)))

    @torch.no_grad()
    def init_similarity(self, embeddings: torch.Tensor, scale: float) -> None:
        """Set W_x = W_e = sqrt(scale) * V, V the top-``dim`` principal directions of ``embeddings``; W_g = 0.

        Then x~ . e~ = scale * (V h(x)) . (V h(e)): ``scale`` times the similarity of the two (unit-norm)
        embeddings within the directions the data varies along, and pi(x) is uniform. With fewer samples
        than ``dim`` the rows beyond the data's rank are an orthonormal completion, so every row can learn.
        """
        centered = embeddings.float() - embeddings.float().mean(0)
        _, _, vh = torch.linalg.svd(centered, full_matrices=True)
        basis = vh[: self.W_x.out_features] * math.sqrt(scale)
        self.W_x.weight.copy_(basis)
        self.W_e.weight.copy_(basis)
        self.W_g.weight.zero_()

    @torch.no_grad()
    def init_persona_targets(self, h_g: torch.Tensor, centroids: torch.Tensor) -> None:
        """Set W_g so that g~_k = W_e c_k for every persona (``centroids`` (K, D): c_k per row).

        After :meth:`init_similarity`, x~ . g~_k is then ``scale`` x the mean similarity of x to persona k's
        exemplars: pi(x) starts as a soft nearest-cluster assignment instead of uniform. W_g is the
        minimum-norm solution of W_g h(g_k) = W_e c_k (exact while the K descriptions' embeddings are
        linearly independent).
        """
        targets = self.W_e(centroids.float())
        self.W_g.weight.copy_((torch.linalg.pinv(h_g.float()) @ targets).T)

    def persona_logits(
        self, h_x: torch.Tensor, h_g: torch.Tensor, persona_bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x~ . g~_k (+ ``persona_bias``): the persona gate's logits, (B, K)."""
        logits = self.W_x(h_x) @ self.W_g(h_g).T
        return logits if persona_bias is None else logits + persona_bias

    @property
    def temperatures(self) -> torch.Tensor:
        return self.log_tau.exp()

    def forward(
        self,
        h_x: torch.Tensor,
        h_g: torch.Tensor,
        h_e: torch.Tensor,
        exemplar_mask: torch.Tensor | None = None,
        exemplar_bias: torch.Tensor | None = None,
        persona_bias: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return log pi (B, K) and log Omega (B, K, N).

        ``exemplar_mask`` (B, N) is True where exemplar j must not be used for context b (its own).
        ``exemplar_bias`` (N,) and ``persona_bias`` (K,) are added to every exemplar / persona logit
        (calibrated priors; see :class:`MixtureOfPersonas`' ``calibrate_exemplars`` and ``calibrate_personas``).
        """
        x, g, e = self.W_x(h_x), self.W_g(h_g), self.W_e(h_e)
        log_pi = (x @ g.T if persona_bias is None else x @ g.T + persona_bias).log_softmax(dim=-1)
        logits = (x @ e.T).unsqueeze(1) + (g @ e.T).unsqueeze(0)
        if exemplar_bias is not None:
            logits = logits + exemplar_bias
        if exemplar_mask is not None:
            logits = logits.masked_fill(exemplar_mask.unsqueeze(1), float("-inf"))
        return log_pi, logits.log_softmax(dim=-1)

    def exemplar_log_probs(
        self, h_x: torch.Tensor, h_g_k: torch.Tensor, h_e: torch.Tensor, exemplar_bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        """log Omega_k(x) for one persona per row: h_x (B, D), h_g_k (B, D) -> (B, N)."""
        x, g, e = self.W_x(h_x), self.W_g(h_g_k), self.W_e(h_e)
        logits = (x + g) @ e.T
        return (logits if exemplar_bias is None else logits + exemplar_bias).log_softmax(dim=-1)


def exemplar_marginal(log_pi: torch.Tensor, log_omega: torch.Tensor) -> torch.Tensor:
    """P(exemplar j | x) = sum_k pi_k(x) Omega_kj(x): (B, K) and (B, K, N) log-weights -> (B, N)."""
    return (log_pi.unsqueeze(2) + log_omega).exp().sum(1)
