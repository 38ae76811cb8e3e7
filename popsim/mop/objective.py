"""MoP's training objective: the records' log-likelihood under their top-M (persona, exemplar) pairs.

    loss = - sum_i w_i log sum_{(k, j) in top-M(i)} pi_k(x_i) Omega_kj(x_i) p_LM^{tau_k}(y_i | g_k, (x_j, y_j), x_i)
           - balance * (entropy of the batch-average persona and exemplar distributions)

Each record's own exemplar is masked out of its pairs (it would let the gate learn to copy the record's
own answer), and ``mask_answered`` also masks the exemplars that already answer the record's question.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from popsim.exceptions import DataError
from popsim.mop.gating import exemplar_marginal
from popsim.mop.scoring import pair_log_likelihood
from popsim.records import Records

if TYPE_CHECKING:
    from popsim.mop.model import MixtureOfPersonas

__all__ = ["PairObjective", "own_exemplar_mask"]


def own_exemplar_mask(record_groups: np.ndarray, exemplar_groups: np.ndarray) -> torch.Tensor:
    """(n_records, N) True where exemplar j is the record's own respondent (same group)."""
    return torch.from_numpy(np.asarray(record_groups)[:, None] == np.asarray(exemplar_groups)[None, :])


class PairObjective:
    """The loss of a fitted-in-progress model on batches of ``records`` (``h_x``: their gate embeddings).

    ``held`` remembers each record's pairs at its last visit: a held pair keeps its place in the top-M
    unless a new pair's gate weight is ``stickiness`` times larger (near-ties would otherwise swap pairs
    every epoch, and each swap costs fresh LM scores).
    """

    def __init__(self, model: MixtureOfPersonas, records: Records, h_x: torch.Tensor) -> None:
        self.model = model
        self.records = records
        self.h_x = h_x
        self.held: dict[int, np.ndarray] = {}

    def pair_mask(self, rows: np.ndarray) -> torch.Tensor:
        """Exemplars a record may not use: its own and, with ``mask_answered``, any that answer its question.

        A row left with no usable exemplar is an error: its likelihood would be a sum over nothing.
        """
        model, records = self.model, self.records
        mask = own_exemplar_mask(records.groups[rows], model.exemplars_.groups)
        if model.mask_answered:
            answered = [set(y.splitlines()) for y in model.exemplars_.outputs]
            asked = [records.contexts[i].rstrip().splitlines()[-1] for i in rows]
            by_question = mask | torch.tensor([[q in lines for lines in answered] for q in asked], dtype=torch.bool)
            mask = torch.where(by_question.all(1, keepdim=True), mask, by_question)  # keep a row usable
        empty = mask.all(1)
        if bool(empty.any()):
            row = int(rows[int(empty.nonzero()[0, 0])])
            raise DataError(
                f"record {row} (group {records.groups[row]!r}) has no usable exemplar: every pool member is its "
                "own respondent; give the exemplar pool members from other respondents (or distinct groups)")
        return mask

    def select_pairs(self, joint: torch.Tensor, batch: np.ndarray, m: int, *, remember: bool) -> torch.Tensor:
        """Top-m pair indices per row, with a log(stickiness) bonus for the pairs each record held."""
        stickiness = self.model.settings_["stickiness"]
        if stickiness <= 1:
            return joint.topk(m, dim=1).indices
        bonus = torch.zeros_like(joint)
        for row, i in enumerate(batch.tolist()):
            if i in self.held:
                bonus[row, torch.from_numpy(self.held[i])] = float(np.log(stickiness))
        idx = (joint + bonus).topk(m, dim=1).indices
        if remember:
            for row, i in enumerate(batch.tolist()):
                self.held[i] = idx[row].numpy().copy()
        return idx

    def loss(self, batch: np.ndarray, *, balance: float = 0.0, remember: bool = True) -> torch.Tensor:
        """-weighted mean over the batch of log sum_{(k,j) in top-M} pi_k Omega_kj p_LM^{tau_k}(y | ...),
        minus ``balance`` times the entropies of the batch-average persona and exemplar distributions."""
        model, records = self.model, self.records
        log_pi, log_omega = model.gate_(self.h_x[batch], model.h_g_, model.h_e_, self.pair_mask(batch),
                                        persona_bias=model.persona_bias_)
        joint = (log_pi.unsqueeze(2) + log_omega).flatten(1)  # (B, K*N)
        m = min(model.top_m, joint.shape[1])
        top_idx = self.select_pairs(joint.detach(), batch, m, remember=remember)
        top_logw = joint.gather(1, top_idx)
        n_ex = model.h_e_.shape[0]
        ks, js = top_idx // n_ex, top_idx % n_ex
        prompts, responses, options = [], [], []
        for row, i in enumerate(batch):
            for k, j in zip(ks[row].tolist(), js[row].tolist(), strict=True):
                prompts.append(model.prompt(k, j, records.contexts[i], records.question_id(i)))
                responses.append(records.responses[i])
                options.append(records.options[i])
        tau = model.gate_.temperatures[ks.flatten()]
        ll, n_tokens = pair_log_likelihood(model.cache_, prompts, responses, options, tau,
                                           offsets=model.offsets_for(options))
        per_record = torch.logsumexp(top_logw + ll.view(len(batch), m), dim=1)
        w = torch.from_numpy(records.weights[batch]).float()
        nll = -(w * per_record).sum() / w.sum()
        if balance <= 0:
            return nll
        # per scored unit: the bonus must weigh the same against a 40-token review's log-likelihood as against
        # one multiple-choice decision (unscaled, one Adam step collapsed review gates onto one exemplar)
        free_text = torch.tensor([records.options[i] is None for i in batch for _ in range(m)])
        units = torch.ones(len(free_text))
        if len(n_tokens) == len(free_text):  # one scored target per row
            units = torch.where(free_text, n_tokens, units)
        mean_pi = log_pi.exp().mean(0)
        mean_ex = exemplar_marginal(log_pi, log_omega).mean(0)
        entropy = -(mean_pi * mean_pi.clamp_min(1e-12).log()).sum() - (mean_ex * mean_ex.clamp_min(1e-12).log()).sum()
        return nll - balance * float(units.mean()) * entropy

    def mean_loss(self, rows: np.ndarray, *, chunk: int = 256) -> float:
        """Weighted mean loss over ``rows`` without gradients or balance (validation)."""
        with torch.no_grad():
            total = sum(float(self.loss(rows[a : a + chunk], remember=True)) * len(rows[a : a + chunk])
                        for a in range(0, len(rows), chunk))
        return total / max(len(rows), 1)
