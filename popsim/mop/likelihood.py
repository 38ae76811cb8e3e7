"""Held-out log-likelihood of records under MoP and its baselines, for comparing methods fairly."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from popsim.mop.objective import PairObjective
from popsim.mop.scoring import pair_log_likelihood
from popsim.records import Records

if TYPE_CHECKING:
    from popsim.mop.model import MixtureOfPersonas

__all__ = ["held_out_log_likelihood"]


def held_out_log_likelihood(
    model: MixtureOfPersonas, records: Records, *, method: str = "mop", n_samples: int = 8, seed: int = 0,
    exact_pairs: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """Log-likelihood per record and y's token count.

    ``mop`` and ``uniform`` (personas and exemplars uniform, tau = tau_init) sum the mixture exactly over
    every (k, j) pair when K x N <= ``exact_pairs``; otherwise both use the Monte-Carlo estimate
    log (1/S) sum_s p(y | k_s, j_s) with S = ``n_samples`` pairs drawn from the mixture (the own exemplar
    masked). ``no_persona`` scores the bare task prompt at temperature 1.
    """
    rng = np.random.default_rng(seed)
    n = len(records)
    cache = model.cache_for_eval()
    if method == "no_persona":
        prompts = [model.prompt(None, None, c) for c in records.contexts]
        ll, n_tok = pair_log_likelihood(cache, prompts, records.responses, records.options, torch.ones(n))
        return ll.detach().numpy(), n_tok.numpy()
    if method not in {"mop", "uniform"}:
        raise ValueError(f"method must be mop, uniform or no_persona; got {method!r}")
    n_k, n_j = len(model.personas_), len(model.exemplars_)
    if n_k * n_j <= exact_pairs:
        return _exact(model, records, method)
    tau_init = model.settings_["tau_init"]
    prompts, taus = [], []
    for _ in range(n_samples):
        if method == "mop":
            draw = model.sample(records.gate_inputs, rng, groups=records.groups)
            ks, js, tau = draw["persona"], draw["exemplar"], draw["temperature"]
        else:
            ks, js, tau = rng.integers(n_k, size=n), rng.integers(n_j, size=n), np.full(n, tau_init)
        prompts += [model.prompt(int(k), int(j), c, records.question_id(i))
                    for i, (k, j, c) in enumerate(zip(ks, js, records.contexts, strict=True))]
        taus.append(tau)
    options = records.options * n_samples
    ll, n_tok = pair_log_likelihood(cache, prompts, records.responses * n_samples, options,
                                    torch.from_numpy(np.concatenate(taus)).float(),
                                    offsets=model.offsets_for(options, method))
    ll = ll.detach().view(n_samples, n)
    return (torch.logsumexp(ll, dim=0) - np.log(n_samples)).numpy(), n_tok[:n].numpy()


def _exact(model: MixtureOfPersonas, records: Records, method: str) -> tuple[np.ndarray, np.ndarray]:
    """log sum_k sum_j w_kj p(y | k, j) over every pair (small K x N only)."""
    n, n_k, n_j = len(records), len(model.personas_), len(model.exemplars_)
    if method == "mop":
        with torch.no_grad():
            mask = PairObjective(model, records, torch.empty(0)).pair_mask(np.arange(n))
            h_x = torch.from_numpy(model.encoder.encode(list(records.gate_inputs)))
            log_pi, log_omega = model.gate_(h_x, model.h_g_, model.h_e_, mask, model.exemplar_bias_,
                                            persona_bias=model.persona_bias_)
            log_w = (log_pi.unsqueeze(2) + log_omega).flatten(1)
        taus = model.temperatures_
    else:
        log_w = torch.full((n, n_k * n_j), -float(np.log(n_k * n_j)))
        taus = np.full(n_k, model.settings_["tau_init"])
    prompts, tau = [], []
    for i in range(n):
        for k in range(n_k):
            for j in range(n_j):
                prompts.append(model.prompt(k, j, records.contexts[i], records.question_id(i)))
                tau.append(taus[k])
    options = [o for o in records.options for _ in range(n_k * n_j)]
    ll, n_tok = pair_log_likelihood(
        model.cache_for_eval(), prompts, [y for y in records.responses for _ in range(n_k * n_j)],
        options, torch.tensor(tau, dtype=torch.float32), offsets=model.offsets_for(options, method))
    total = torch.logsumexp(log_w + ll.detach().view(n, n_k * n_j), dim=1)
    return total.numpy(), n_tok.view(n, n_k * n_j)[:, 0].numpy()
