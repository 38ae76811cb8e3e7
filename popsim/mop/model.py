"""``MixtureOfPersonas``: the sklearn-style MoP estimator (Bui et al., Findings of ACL 2025).

    p(y | x) = sum_k sum_j pi_k(x) Omega_kj(x) p_LM^{tau_k}(y | persona g_k, exemplar (x_j, y_j), x)

``fit`` synthesises personas (or takes the user's), embeds records and exemplars with the frozen encoder,
and trains the gates and temperatures by maximum likelihood over the top-M (k, j) pairs per record,
the record's own exemplar masked out, with the LM frozen. ``sample`` draws persona, exemplar and
temperature for a population of contexts. ``save``/``load`` use safetensors + JSON (never pickle).
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from tqdm.auto import tqdm

from popsim.embed import SentenceEncoder
from popsim.exceptions import DataError, NotFittedError, RunDirectoryError
from popsim.lm.base import LanguageModel, Prompt
from popsim.mop.gating import MixtureGate, exemplar_marginal
from popsim.mop.personas import Persona, synthesize_personas, user_personas
from popsim.mop.prompts import PromptStyle, build_prompt
from popsim.mop.records import ExemplarPool, Records
from popsim.mop.scoring import ScoreCache, pair_log_likelihood

__all__ = ["MixtureOfPersonas"]

_FORMAT_VERSION = 1


class MixtureOfPersonas:
    """Mixture of Personas with learned persona/exemplar gates over a frozen LM.

    Args:
        lm: the frozen LM (scores prompts during ``fit``; summarises clusters into personas).
        encoder: the frozen sentence encoder h().
        n_personas: K (paper: 100). Ignored when ``personas`` is given.
        n_exemplars: N, size of the exemplar pool drawn from the records (paper: 1,000).
        top_m: pairs (k, j) per record in the objective (paper: 4).
        dim: projection dimension d (paper: 128).
        tau_init: initial per-persona temperature (paper: 0.6).
        personas: user-supplied persona descriptions instead of synthesis.
        style: how prompts are worded (:class:`PromptStyle`).
        learning_rate, epochs, batch_size, patience, val_fraction: Adam training schedule with
            early stopping on a validation split (not published in the paper; tuned on dev data).
        tau_learning_rate: Adam step size for the log-temperatures. The projections have thousands of
            weights and move together; tau_k is one number per persona, and at the projections' rate it
            would need hundreds of steps to travel from 0.6 to 1 (each step moves log tau by ~lr).
            0 keeps every tau_k at ``tau_init``: for free text the likelihood-optimal temperature (about
            1.1 for SmolLM2 on IMDB and SST-2) samples worse texts than a cooler one, so a benchmark may
            fix the temperature it samples at and learn only the gates.
        max_train_records: cap on records used for training (LM scoring is the cost).
        balance: weight of a load-balancing bonus, the entropy of the batch-average persona and exemplar
            distributions (as in mixture-of-experts training, Shazeer et al. 2017), per scored unit: times
            the batch's mean free-text response length in tokens (one per multiple-choice answer), since the
            log-likelihood it competes with grows with the length. The top-M objective alone rewards
            putting all mass on M pairs, which on survey data collapsed every context onto one
            persona and a handful of exemplars; 0 gives the paper's objective exactly.
        mask_answered: also mask, for each record, the exemplars whose transcript already contains the
            record's question (its context's last line). Train as the model will be used when it is asked
            questions no exemplar answers (new items): otherwise a pair can score the record by copying
            another respondent's answer to the same question, which rewards confident copying the new
            questions cannot offer.
        gate_init_scale: start W_x and W_e at the same principal directions, scaled so that the exemplar
            gate's logits are ``gate_init_scale`` x the context-exemplar similarity (nearest-neighbour
            retrieval), and W_g at zero (uniform persona gate); see :meth:`MixtureGate.init_similarity`.
            0 keeps PyTorch's random initialisation (the gates start as random functions of x).
        pair_embedding: how h(x_j, y_j) is formed. ``mean``: the normalised sum of h(x_j) and h(y_j), so a
            long y_j (a review, a survey transcript) cannot drown out x_j (the context or respondent
            profile that the gate compares with x); ``joint``: h of the two texts joined.
        calibrate_exemplars: after training, add one bias per exemplar to the exemplar gate's logits so
            that, averaged over the training contexts (with their weights, own exemplar masked), every
            pool member is drawn equally often. The pool is a random sample of the records, so a gate read
            as a posterior over "which pool member is this context like" must average to the uniform prior
            (Bayes); a softmax over similarities does not, and keeps returning the exemplars that resemble
            every context (generic texts), which narrows what the population writes or answers. The
            biases are found by Sinkhorn-style fixed-point steps. Only each exemplar's overall popularity
            changes: how much more one context prefers an exemplar than another context does (the odds
            ratio) is the trained gate's. ``False`` samples from the trained gate as is (the paper).
        persona_gate_init: ``uniform`` starts W_g at zero (pi uniform); ``clusters`` (needs
            ``gate_init_scale`` > 0) starts pi(x) as a soft assignment of x to the personas' clusters:
            x~ . g~_k = ``gate_init_scale`` x the mean similarity of x to persona k's exemplars (its K-means
            cluster; user personas: its description). Paired with ``calibrate_personas``, which stops the
            most central cluster from taking every context. See :meth:`MixtureGate.init_persona_targets`.
        calibrate_personas: one bias per persona on the persona gate's logits, set before and again after
            training so that pi averaged over the training contexts (weighted) equals each persona's share
            of the exemplar pool (its cluster's size; uniform for user personas): the same Bayes argument
            as ``calibrate_exemplars``, for the persona that "explains" a record. ``False``: no bias (the
            paper's gate).
        learn_option_offsets: learn, jointly with the gates, one offset per (answer scale, option) added to
            the LM's option log-probabilities before the likelihood is normalised over a question's
            options (a scale is one tuple of option wordings; it is shared by every question that offers
            those options, new ones included). A small LM prefers some option wordings whatever it is
            asked; without offsets the gates can only correct that by favouring exemplars whose transcripts
            pull the other way, with offsets they are trained against a debiased LM and the offsets are
            kept (:attr:`option_offsets_`) for simulation to add to the same scales. ``False``: the
            paper's likelihood, the LM's own option probabilities.
        offset_learning_rate: Adam step size for the option offsets (one number per option, like tau_k, so
            it needs a larger step than the projections' to move in the few steps a fit takes).
        check_personas: keep an LM persona summary only if its embedding is nearer its own K-means
            cluster's centroid than any other's, else use the cluster's fallback description (distinctive
            words and shared attributes); see :func:`synthesize_personas`. ``False``: every non-degenerate
            summary is kept (the paper).
        stickiness: a pair in a record's top-M set at its last visit stays there unless a new pair's gate
            weight is this many times larger (hysteresis; 1 re-selects the plain top-M every time). Any M
            pairs give a lower bound on the record's log-likelihood, so the objective stays a bound; sticky
            sets stop near-ties from swapping pairs every epoch, and each swap costs fresh LM scores (the
            score cache only serves pairs seen before).
        cache_path: optional SQLite file for LM scores, reused across epochs and runs.
        random_state: seed for everything random in ``fit``.
    """

    def __init__(
        self,
        lm: LanguageModel | None = None,
        encoder: SentenceEncoder | None = None,
        *,
        n_personas: int = 20,
        n_exemplars: int = 500,
        top_m: int = 4,
        dim: int = 128,
        tau_init: float = 0.6,
        personas: Sequence[str] | None = None,
        style: PromptStyle | None = None,
        learning_rate: float = 0.003,
        tau_learning_rate: float = 0.003,
        epochs: int = 8,
        batch_size: int = 32,
        patience: int = 2,
        val_fraction: float = 0.15,
        max_train_records: int | None = 2000,
        balance: float = 1.0,
        stickiness: float = 4.0,
        mask_answered: bool = False,
        gate_init_scale: float = 0.0,
        pair_embedding: str = "joint",
        calibrate_exemplars: bool = False,
        persona_gate_init: str = "uniform",
        calibrate_personas: bool = False,
        check_personas: bool = False,
        learn_option_offsets: bool = False,
        offset_learning_rate: float = 0.1,
        cache_path: str | Path | None = None,
        random_state: int = 0,
        verbose: bool = True,
    ) -> None:
        self.lm = lm
        self.encoder = encoder
        self.n_personas = n_personas
        self.n_exemplars = n_exemplars
        self.top_m = top_m
        self.dim = dim
        self.tau_init = tau_init
        self.personas = personas
        self.style = style
        self.learning_rate = learning_rate
        self.tau_learning_rate = tau_learning_rate
        self.epochs = epochs
        self.batch_size = batch_size
        self.patience = patience
        self.val_fraction = val_fraction
        self.max_train_records = max_train_records
        self.balance = balance
        self.stickiness = stickiness
        self.mask_answered = mask_answered
        self.gate_init_scale = gate_init_scale
        self.pair_embedding = pair_embedding
        self.calibrate_exemplars = calibrate_exemplars
        self.persona_gate_init = persona_gate_init
        self.calibrate_personas = calibrate_personas
        self.check_personas = check_personas
        self.learn_option_offsets = learn_option_offsets
        self.offset_learning_rate = offset_learning_rate
        self.cache_path = cache_path
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ sklearn plumbing
    def get_params(self, deep: bool = False) -> dict:
        names = [
            "lm", "encoder", "n_personas", "n_exemplars", "top_m", "dim", "tau_init", "personas", "style",
            "learning_rate", "tau_learning_rate", "epochs", "batch_size", "patience", "val_fraction",
            "max_train_records", "balance", "stickiness", "mask_answered", "gate_init_scale", "pair_embedding",
            "calibrate_exemplars", "persona_gate_init", "calibrate_personas", "check_personas", "learn_option_offsets",
            "offset_learning_rate", "cache_path",
            "random_state", "verbose",
        ]
        return {n: getattr(self, n) for n in names}

    def set_params(self, **params) -> MixtureOfPersonas:
        for key, value in params.items():
            if key not in self.get_params():
                raise ValueError(f"MixtureOfPersonas has no parameter {key!r}")
            setattr(self, key, value)
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "gate_"):
            raise NotFittedError("this MixtureOfPersonas is not fitted yet; call fit(records) or load(dir)")

    def _validate(self) -> None:
        checks = {
            "n_personas": self.n_personas >= 1, "n_exemplars": self.n_exemplars >= 1, "top_m": self.top_m >= 1,
            "dim": self.dim >= 1, "tau_init": self.tau_init > 0, "learning_rate": self.learning_rate > 0,
            "tau_learning_rate": self.tau_learning_rate >= 0, "offset_learning_rate": self.offset_learning_rate > 0,
            "epochs": self.epochs >= 1, "batch_size": self.batch_size >= 1,
            "val_fraction": 0 <= self.val_fraction < 1, "stickiness": self.stickiness >= 1,
            "gate_init_scale": self.gate_init_scale >= 0,
            "pair_embedding": self.pair_embedding in {"mean", "joint"},
            "persona_gate_init": self.persona_gate_init in {"uniform", "clusters"},
        }
        for name, ok in checks.items():
            if not ok:
                raise DataError(f"mop.{name} is out of range; got {getattr(self, name)!r}")
        if self.persona_gate_init == "clusters" and self.gate_init_scale <= 0:
            raise DataError("mop.persona_gate_init 'clusters' needs mop.gate_init_scale > 0 (it starts from the "
                            "similarity-initialised projections); set both, or persona_gate_init 'uniform'")
        if self.lm is None or self.encoder is None:
            raise DataError("MixtureOfPersonas needs lm= and encoder= to fit")

    # ------------------------------------------------------------------ fit
    def fit(self, records: Records, exemplars: ExemplarPool | None = None) -> MixtureOfPersonas:
        """Fit personas, exemplar pool, gates and temperatures to ``records``; returns self."""
        self._validate()
        t0 = time.perf_counter()
        rng = np.random.default_rng(self.random_state)
        style = self.style or PromptStyle()
        pool = exemplars or ExemplarPool.from_records(records, self.n_exemplars, seed=self.random_state)
        encoder = self.encoder
        h_e = embed_pairs(encoder, pool, self.pair_embedding)
        if self.personas is not None:
            personas = user_personas(self.personas)
            labels = None
        else:
            personas, labels = synthesize_personas(
                pool.texts, h_e, n_personas=self.n_personas, lm=self.lm, attributes=pool.attributes,
                seed=self.random_state, check_encoder=encoder if self.check_personas else None,
            )
        h_g = encoder.encode([p.text for p in personas])
        self.personas_ = personas
        self.exemplars_ = pool
        self.persona_labels_ = labels
        self.style_ = style
        self.h_g_ = torch.from_numpy(h_g)
        self.h_e_ = torch.from_numpy(h_e)
        with torch.random.fork_rng():
            torch.manual_seed(self.random_state)
            self.gate_ = MixtureGate(h_e.shape[1], len(personas), dim=self.dim, tau_init=self.tau_init)

        all_records = records
        if self.max_train_records and len(records) > self.max_train_records:
            records = records.subset(np.sort(rng.choice(len(records), self.max_train_records, replace=False)))
        order = rng.permutation(len(records))
        n_val = int(round(self.val_fraction * len(records))) if len(records) >= 10 else 0
        val_idx, train_idx = order[:n_val], order[n_val:]
        h_x = torch.from_numpy(encoder.encode(records.gate_inputs))
        if self.gate_init_scale > 0:
            self.gate_.init_similarity(torch.cat([h_x, self.h_e_, self.h_g_]), self.gate_init_scale)
            if self.persona_gate_init == "clusters":
                self.gate_.init_persona_targets(self.h_g_, self._persona_centroids())
        self.persona_bias_ = torch.zeros(len(personas))
        self.exemplar_bias_ = torch.zeros(len(pool))
        if self.calibrate_personas:  # start training from the calibrated prior, and calibrate again after
            self.persona_bias_ = self._calibrated_persona_bias(all_records)
        self.cache_ = ScoreCache(self.lm, self.cache_path)
        # every scale of the data, not only of the subsample scored in training: one left out keeps 0 offsets
        scales = sorted({o for o in all_records.options if o is not None}) if self.learn_option_offsets else []
        self.option_offset_params_ = {s: torch.zeros(len(s), requires_grad=True) for s in scales}
        projections = [p for name, p in self.gate_.named_parameters() if name != "log_tau"]
        groups = [{"params": projections, "lr": self.learning_rate},
                  {"params": [self.gate_.log_tau], "lr": self.tau_learning_rate}]
        if scales:
            groups.append({"params": list(self.option_offset_params_.values()), "lr": self.offset_learning_rate})
        optimizer = torch.optim.Adam(groups)
        best, best_state, bad_epochs, history = float("inf"), None, 0, []
        held: dict[int, np.ndarray] = {}  # record -> its top-M pair indices at its last visit
        for epoch in range(self.epochs):
            t_epoch = time.perf_counter()
            self.gate_.train()
            perm = rng.permutation(train_idx)
            batches = [perm[i : i + self.batch_size] for i in range(0, len(perm), self.batch_size)]
            train_loss = 0.0
            bar = tqdm(batches, desc=f"MoP epoch {epoch + 1}/{self.epochs}", disable=not self.verbose, leave=False)
            for batch in bar:
                loss = self._batch_loss(records, batch, h_x, balance=self.balance, held=held)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                train_loss += float(loss.detach()) * len(batch)
                bar.set_postfix(loss=f"{float(loss.detach()):.3f}", cache=f"{self.cache_.hit_rate:.0%}")
            train_loss /= max(len(train_idx), 1)
            val_loss = train_loss
            if n_val:
                with torch.no_grad():
                    val_loss = sum(
                        float(self._batch_loss(records, val_idx[i : i + 256], h_x, held=held))
                        * len(val_idx[i : i + 256])
                        for i in range(0, n_val, 256)
                    ) / n_val
            history.append({"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss,
                            "seconds": time.perf_counter() - t_epoch, "cache_hit_rate": self.cache_.hit_rate,
                            "cache_hits": self.cache_.hits, "cache_misses": self.cache_.misses})
            if val_loss < best - 1e-4:
                best, bad_epochs = val_loss, 0
                best_state = ({k: v.detach().clone() for k, v in self.gate_.state_dict().items()},
                              {s: p.detach().clone() for s, p in self.option_offset_params_.items()})
            else:
                bad_epochs += 1
                if bad_epochs > self.patience:
                    break
        if best_state is not None:  # (gate state, option offsets) of the best validation epoch
            self.gate_.load_state_dict(best_state[0])
            self.option_offset_params_ = best_state[1]
        # centred (a constant shift of a scale's offsets changes nothing) and frozen
        self.option_offset_params_ = {s: (p - p.mean()).detach() for s, p in self.option_offset_params_.items()}
        self.gate_.eval()
        if self.calibrate_personas:
            self.persona_bias_ = self._calibrated_persona_bias(all_records)
        if self.calibrate_exemplars:
            self.exemplar_bias_ = self._calibrated_exemplar_bias(all_records)
        self.history_ = history
        self.fit_info_ = {
            "seconds": time.perf_counter() - t0, "n_records": len(records), "n_train": len(train_idx),
            "n_val": int(n_val), "best_val_loss": best, "cache_hits": self.cache_.hits,
            "cache_misses": self.cache_.misses, "cache_hit_rate": self.cache_.hit_rate,
        }
        self.lm_name_ = self.lm.name
        self.encoder_name_ = encoder.name
        return self

    def prompt(self, k: int | None, j: int | None, context: str) -> Prompt:
        """The prompt for persona k, exemplar j and context (``None`` leaves the part out)."""
        self._check_fitted()
        persona = None if k is None else self.personas_[k].text
        exemplar = None if j is None else (self.exemplars_.inputs[j], self.exemplars_.outputs[j])
        return build_prompt(persona, exemplar, context, self.style_)

    def _own_exemplar_mask(self, groups: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(groups)[:, None] == self.exemplars_.groups[None, :])

    def _pair_mask(self, records: Records, rows: np.ndarray) -> torch.Tensor:
        """Exemplars a record may not use: its own and, with ``mask_answered``, any that answer its question."""
        mask = self._own_exemplar_mask(records.groups[rows])
        if self.mask_answered:
            answered = [set(y.splitlines()) for y in self.exemplars_.outputs]
            asked = [records.contexts[i].rstrip().splitlines()[-1] for i in rows]
            by_question = mask | torch.tensor([[q in lines for lines in answered] for q in asked], dtype=torch.bool)
            mask = torch.where(by_question.all(1, keepdim=True), mask, by_question)  # keep a row usable
        return mask

    def _batch_loss(
        self, records: Records, batch: np.ndarray, h_x: torch.Tensor, *, balance: float = 0.0,
        held: dict[int, np.ndarray] | None = None,
    ) -> torch.Tensor:
        """-weighted mean over the batch of log sum_{(k,j) in top-M} pi_k Omega_kj p_LM^{tau_k}(y | ...).

        ``held`` maps a record to its pairs at its last visit; they get a ``stickiness`` head start in
        the top-M selection and the dict is updated with the new selection.

        With ``balance`` > 0, minus ``balance`` times the entropies of the batch-average persona
        distribution and exemplar marginal (load balancing; see the class docstring).
        """
        mask = self._pair_mask(records, batch)
        log_pi, log_omega = self.gate_(h_x[batch], self.h_g_, self.h_e_, mask, persona_bias=self.persona_bias_)
        joint = (log_pi.unsqueeze(2) + log_omega).flatten(1)  # (B, K*N)
        m = min(self.top_m, joint.shape[1])
        top_idx = self._select_pairs(joint.detach(), batch, m, held)
        top_logw = joint.gather(1, top_idx)
        n_ex = self.h_e_.shape[0]
        ks, js = (top_idx // n_ex), (top_idx % n_ex)
        prompts, responses, options = [], [], []
        for row, i in enumerate(batch):
            for k, j in zip(ks[row].tolist(), js[row].tolist(), strict=True):
                prompts.append(self.prompt(k, j, records.contexts[i]))
                responses.append(records.responses[i])
                options.append(records.options[i])
        tau = self.gate_.temperatures[ks.flatten()]
        ll, n_tokens = pair_log_likelihood(self.cache_, prompts, responses, options, tau,
                                           offsets=self._offsets_for(options))
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
        units_per_record = float(units.mean())
        mean_pi = log_pi.exp().mean(0)
        mean_ex = exemplar_marginal(log_pi, log_omega).mean(0)
        entropy = -(mean_pi * mean_pi.clamp_min(1e-12).log()).sum() - (mean_ex * mean_ex.clamp_min(1e-12).log()).sum()
        return nll - balance * units_per_record * entropy

    def _offset_table(self) -> dict[tuple[str, ...], torch.Tensor]:
        """Learned offsets per answer scale; empty without ``learn_option_offsets`` (or for older saves)."""
        return getattr(self, "option_offset_params_", {})

    def _offsets_for(
        self, options: Sequence[tuple[str, ...] | None], method: str = "mop"
    ) -> list[torch.Tensor | None] | None:
        """Each row's learned option offsets for ``method`` (only MoP has them; ``None`` for free text or a
        scale never trained on)."""
        table = self._offset_table() if method == "mop" else {}
        return [table.get(tuple(o)) if o is not None else None for o in options] if table else None

    @property
    def option_offsets_(self) -> dict[tuple[str, ...], np.ndarray]:
        """Learned offsets per answer scale (``learn_option_offsets``; empty without): add them to the LM's
        option log-probabilities of any question on that scale, as training did."""
        self._check_fitted()
        return {s: p.detach().double().numpy().copy() for s, p in self._offset_table().items()}

    def _calibration_contexts(
        self, records: Records, max_contexts: int = 1024
    ) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
        """(rows, h(x), normalised weights) of up to ``max_contexts`` records (a seeded sample of its own,
        so calibrating leaves the training's random stream alone)."""
        rows = np.arange(len(records))
        if len(rows) > max_contexts:
            rng = np.random.default_rng([self.random_state, 17])
            rows = np.sort(rng.choice(rows, max_contexts, replace=False))
        h_x = torch.from_numpy(self.encoder.encode([records.gate_inputs[i] for i in rows]))
        w = torch.from_numpy(records.weights[rows]).float()
        return rows, h_x, w / w.sum()

    def _persona_prior(self) -> torch.Tensor:
        """Each persona's share of the exemplar pool (its K-means cluster's size); uniform for user personas."""
        n_k = len(self.personas_)
        if self.persona_labels_ is None:
            return torch.full((n_k,), 1.0 / n_k)
        counts = np.bincount(np.asarray(self.persona_labels_), minlength=n_k).astype(np.float32)
        return torch.from_numpy(counts / counts.sum())

    def _persona_centroids(self) -> torch.Tensor:
        """c_k: the mean pair embedding of persona k's exemplars (its description's embedding for user personas)."""
        if self.persona_labels_ is None:
            return self.h_g_.float()
        labels = torch.from_numpy(np.asarray(self.persona_labels_))
        return torch.stack([self.h_e_[labels == k].float().mean(0) for k in range(len(self.personas_))])

    @torch.no_grad()
    def _calibrated_persona_bias(self, records: Records) -> torch.Tensor:
        """Per-persona logit biases b with sum_x w_x softmax_k(x~ . g~_k + b_k) = the persona's prior share."""
        _, h_x, w = self._calibration_contexts(records)
        logits = self.gate_.persona_logits(h_x, self.h_g_)
        return _sinkhorn_bias(lambda bias: (w[:, None] * (logits + bias).softmax(-1)).sum(0),
                              1 / self._persona_prior().clamp_min(1e-12))

    @torch.no_grad()
    def _calibrated_exemplar_bias(self, records: Records, *, chunk: int = 128) -> torch.Tensor:
        """Per-exemplar logit biases b with sum_x w_x sum_k pi_k(x) softmax_j(logit_kj(x) + b_j) = 1/N.

        Over up to 1,024 of the records (weighted), each record's own exemplar masked, pi with its
        calibrated bias if any.
        """
        rows, h_x, w = self._calibration_contexts(records)
        mask = self._own_exemplar_mask(records.groups[rows])
        n_ex = self.h_e_.shape[0]

        def shares(bias: torch.Tensor) -> torch.Tensor:
            share = torch.zeros(n_ex)
            for a in range(0, len(rows), chunk):
                log_pi, log_omega = self.gate_(h_x[a : a + chunk], self.h_g_, self.h_e_, mask[a : a + chunk], bias,
                                               persona_bias=self.persona_bias_)
                share += (w[a : a + chunk, None] * exemplar_marginal(log_pi, log_omega)).sum(0)
            return share

        return _sinkhorn_bias(shares, torch.full((n_ex,), float(n_ex)))

    def _select_pairs(
        self, joint: torch.Tensor, batch: np.ndarray, m: int, held: dict[int, np.ndarray] | None
    ) -> torch.Tensor:
        """Top-m pair indices per row, with a log(stickiness) bonus for the pairs each record held."""
        if held is None or self.stickiness <= 1:
            return joint.topk(m, dim=1).indices
        bonus = torch.zeros_like(joint)
        for row, i in enumerate(batch.tolist()):
            if i in held:
                bonus[row, torch.from_numpy(held[i])] = float(np.log(self.stickiness))
        idx = (joint + bonus).topk(m, dim=1).indices
        for row, i in enumerate(batch.tolist()):
            held[i] = idx[row].numpy().copy()
        return idx

    # ------------------------------------------------------------------ inference
    def _encode_contexts(self, contexts: Sequence[str]) -> torch.Tensor:
        return torch.from_numpy(self.encoder.encode(list(contexts)))

    def mixing_weights(self, contexts: Sequence[str]) -> np.ndarray:
        """pi(x) for each context: array (n, K)."""
        self._check_fitted()
        with torch.no_grad():
            h_x = self._encode_contexts(contexts)
            return self.gate_.persona_logits(h_x, self.h_g_, self.persona_bias_).softmax(-1).numpy()

    def exemplar_weights(self, contexts: Sequence[str], personas: Sequence[int]) -> np.ndarray:
        """Omega_k(x) over the pool for one persona per context: array (n, N)."""
        self._check_fitted()
        with torch.no_grad():
            h_x = self._encode_contexts(contexts)
            return self.gate_.exemplar_log_probs(h_x, self.h_g_[list(personas)], self.h_e_,
                                                 self.exemplar_bias_).exp().numpy()

    @property
    def temperatures_(self) -> np.ndarray:
        self._check_fitted()
        return self.gate_.temperatures.detach().numpy()

    def sample(
        self, contexts: Sequence[str], rng: np.random.Generator, *, groups: Sequence | None = None
    ) -> dict[str, np.ndarray]:
        """Draw persona k ~ pi(x), exemplar j ~ Omega_k(x) and tau_k for every context (vectorised).

        ``groups`` (optional) masks each context's own exemplar, as in training.
        """
        self._check_fitted()
        pi = self.mixing_weights(contexts)
        ks = _sample_rows(pi, rng)
        omega = self.exemplar_weights(contexts, ks)
        if groups is not None:
            omega = np.where(np.asarray(groups).astype(str)[:, None] == self.exemplars_.groups[None, :], 0, omega)
            omega = omega / omega.sum(axis=1, keepdims=True)
        js = _sample_rows(omega, rng)
        return {"persona": ks, "exemplar": js, "temperature": self.temperatures_[ks]}

    def log_likelihood(
        self, records: Records, *, method: str = "mop", n_samples: int = 8, seed: int = 0, exact_pairs: int = 64
    ) -> tuple[np.ndarray, np.ndarray]:
        """Held-out log-likelihood per record and y's token count, for comparing methods fairly.

        ``mop`` and ``uniform`` (personas and exemplars uniform, tau = tau_init) sum the mixture exactly
        over every (k, j) pair when K x N <= ``exact_pairs``; otherwise both use the Monte-Carlo estimate
        log (1/S) sum_s p(y | k_s, j_s) with S = ``n_samples`` pairs drawn from the mixture (the own
        exemplar masked). ``no_persona`` scores the bare task prompt at temperature 1.
        """
        self._check_fitted()
        rng = np.random.default_rng(seed)
        n = len(records)
        if method == "no_persona":
            prompts = [self.prompt(None, None, c) for c in records.contexts]
            ll, n_tok = pair_log_likelihood(self.cache_for_eval(), prompts, records.responses, records.options,
                                            torch.ones(n))
            return ll.detach().numpy(), n_tok.numpy()
        if method not in {"mop", "uniform"}:
            raise ValueError(f"method must be mop, uniform or no_persona; got {method!r}")
        n_k, n_j = len(self.personas_), len(self.exemplars_)
        if n_k * n_j <= exact_pairs:
            return self._exact_log_likelihood(records, method)
        prompts, taus = [], []
        for _ in range(n_samples):
            if method == "mop":
                draw = self.sample(records.gate_inputs, rng, groups=records.groups)
                ks, js, tau = draw["persona"], draw["exemplar"], draw["temperature"]
            else:
                ks = rng.integers(n_k, size=n)
                js = rng.integers(n_j, size=n)
                tau = np.full(n, self.tau_init)
            prompts += [self.prompt(int(k), int(j), c) for k, j, c in zip(ks, js, records.contexts, strict=True)]
            taus.append(tau)
        options = records.options * n_samples
        ll, n_tok = pair_log_likelihood(
            self.cache_for_eval(), prompts, records.responses * n_samples, options,
            torch.from_numpy(np.concatenate(taus)).float(),
            offsets=self._offsets_for(options, method),
        )
        ll = ll.detach().view(n_samples, n)
        return (torch.logsumexp(ll, dim=0) - np.log(n_samples)).numpy(), n_tok[:n].numpy()

    def _exact_log_likelihood(self, records: Records, method: str) -> tuple[np.ndarray, np.ndarray]:
        """log sum_k sum_j w_kj p(y | k, j) over every pair (small K x N only)."""
        n, n_k, n_j = len(records), len(self.personas_), len(self.exemplars_)
        if method == "mop":
            with torch.no_grad():
                mask = self._pair_mask(records, np.arange(n))
                log_pi, log_omega = self.gate_(self._encode_contexts(records.gate_inputs), self.h_g_, self.h_e_, mask,
                                               self.exemplar_bias_, persona_bias=self.persona_bias_)
                log_w = (log_pi.unsqueeze(2) + log_omega).flatten(1)
            taus = self.temperatures_
        else:
            log_w = torch.full((n, n_k * n_j), -float(np.log(n_k * n_j)))
            taus = np.full(n_k, self.tau_init)
        prompts, tau = [], []
        for i in range(n):
            for k in range(n_k):
                for j in range(n_j):
                    prompts.append(self.prompt(k, j, records.contexts[i]))
                    tau.append(taus[k])
        options = [o for o in records.options for _ in range(n_k * n_j)]
        ll, n_tok = pair_log_likelihood(
            self.cache_for_eval(), prompts, [y for y in records.responses for _ in range(n_k * n_j)],
            options, torch.tensor(tau, dtype=torch.float32),
            offsets=self._offsets_for(options, method),
        )
        total = torch.logsumexp(log_w + ll.detach().view(n, n_k * n_j), dim=1)
        return total.numpy(), n_tok.view(n, n_k * n_j)[:, 0].numpy()

    def cache_for_eval(self) -> ScoreCache:
        if not hasattr(self, "cache_"):
            self.cache_ = ScoreCache(self.lm, self.cache_path)
        return self.cache_

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> Path:
        """Write ``gate.safetensors`` and ``mop.json`` (personas, exemplars, settings, provenance)."""
        self._check_fitted()
        from popsim.io import atomic_write_bytes, atomic_write_json

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {f"gate.{k}": v.detach().contiguous() for k, v in self.gate_.state_dict().items()}
        tensors["h_g"] = self.h_g_.contiguous()
        tensors["h_e"] = self.h_e_.contiguous()
        tensors["exemplar_bias"] = self.exemplar_bias_.contiguous()
        tensors["persona_bias"] = self.persona_bias_.contiguous()
        scales = list(self._offset_table())
        for i, scale in enumerate(scales):
            tensors[f"option_offsets.{i}"] = self.option_offset_params_[scale].contiguous()
        atomic_write_bytes(out / "gate.safetensors", save_safetensors(tensors))
        params = {k: v for k, v in self.get_params().items() if k not in {"lm", "encoder", "style", "cache_path"}}
        params["personas"] = list(self.personas) if self.personas is not None else None
        meta = {
            "format_version": _FORMAT_VERSION,
            "params": params,
            "style": vars(self.style_),
            "personas": [p.to_dict() for p in self.personas_],
            "option_scales": [list(s) for s in scales],
            "exemplars": {"inputs": self.exemplars_.inputs, "outputs": self.exemplars_.outputs,
                          "groups": [str(g) for g in self.exemplars_.groups]},
            "lm": self.lm_name_,
            "encoder": self.encoder_name_,
            "history": getattr(self, "history_", []),
            "fit_info": getattr(self, "fit_info_", {}),
            "versions": {"python": platform.python_version(), "torch": torch.__version__},
        }
        atomic_write_json(out / "mop.json", meta)
        return out

    @classmethod
    def load(
        cls, directory: str | Path, *, lm: LanguageModel | None = None, encoder: SentenceEncoder | None = None
    ) -> MixtureOfPersonas:
        """Load a saved model. ``lm`` may differ from the one it was fitted with (gates transfer)."""
        folder = Path(directory)
        meta_path, gate_path = folder / "mop.json", folder / "gate.safetensors"
        for path in (meta_path, gate_path):
            if not path.is_file():
                raise RunDirectoryError(f"no fitted MoP model in {folder} ({path.name} is missing); run `popsim fit` "
                                        "first, or delete the folder to refit")
        current = meta_path
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if not isinstance(meta, dict) or meta.get("format_version") != _FORMAT_VERSION:
                raise ValueError(f"not a format-{_FORMAT_VERSION} popsim model file")
            current = gate_path
            tensors = load_safetensors(gate_path.read_bytes())
            current = meta_path
            params = meta["params"]
            model = cls(lm=lm, encoder=encoder, **params)
            model.style_ = PromptStyle(**meta["style"])
            model.personas_ = [Persona(**p) for p in meta["personas"]]
            ex = meta["exemplars"]
            model.exemplars_ = ExemplarPool(ex["inputs"], ex["outputs"], np.asarray(ex["groups"]))
            current = gate_path
            model.h_g_, model.h_e_ = tensors.pop("h_g"), tensors.pop("h_e")
            # older files have no biases: the uncalibrated gate
            model.exemplar_bias_ = tensors.pop("exemplar_bias", torch.zeros(model.h_e_.shape[0]))
            model.persona_bias_ = tensors.pop("persona_bias", torch.zeros(model.h_g_.shape[0]))
            scales = [tuple(s) for s in meta.get("option_scales", [])]  # older files: no offsets
            model.option_offset_params_ = {s: tensors.pop(f"option_offsets.{i}") for i, s in enumerate(scales)}
            if any(tuple(p.shape) != (len(s),) for s, p in model.option_offset_params_.items()):
                raise ValueError("option offsets do not match their scales in mop.json")
            n_ex = len(model.exemplars_.inputs)
            if (model.h_g_.shape[0] != len(model.personas_) or model.h_e_.shape[0] != n_ex
                    or tuple(model.exemplar_bias_.shape) != (n_ex,)
                    or tuple(model.persona_bias_.shape) != (len(model.personas_),)):
                raise ValueError("tensor shapes do not match mop.json")
            model.gate_ = MixtureGate(model.h_e_.shape[1], len(model.personas_), dim=params["dim"])
            model.gate_.load_state_dict({k.removeprefix("gate."): v for k, v in tensors.items()})
            current = meta_path
            model.lm_name_, model.encoder_name_ = meta["lm"], meta["encoder"]
        except Exception as exc:  # json, safetensors, torch and our own checks raise many types
            raise RunDirectoryError(
                f"fitted model file {current} is corrupt or truncated ({type(exc).__name__}); delete {folder} "
                "to refit (or restore the file)"
            ) from None
        model.gate_.eval()
        model.history_, model.fit_info_ = meta.get("history", []), meta.get("fit_info", {})
        model.persona_labels_ = None
        if encoder is not None and encoder.name != meta["encoder"]:
            raise RunDirectoryError(
                f"model in {folder} was fitted with encoder '{meta['encoder']}', not '{encoder.name}'; "
                "use the same encoder (the gates read its embeddings)"
            )
        return model


def embed_pairs(encoder: SentenceEncoder, pool: ExemplarPool, how: str = "joint") -> np.ndarray:
    """h(x_j, y_j) for every exemplar: ``mean`` = normalised h(x_j) + h(y_j); ``joint`` = h(x_j + y_j)."""
    if how == "joint":
        return encoder.encode(pool.texts)
    pair = encoder.encode(list(pool.inputs)) + encoder.encode(list(pool.outputs))
    return (pair / np.linalg.norm(pair, axis=1, keepdims=True).clip(1e-12)).astype(np.float32)


def _sinkhorn_bias(
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


def _sample_rows(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One categorical draw per row of ``probs`` (rows sum to 1), vectorised via inverse CDF."""
    cdf = np.cumsum(probs, axis=1)
    u = rng.random(probs.shape[0]) * cdf[:, -1]
    return np.minimum((cdf < u[:, None]).sum(axis=1), probs.shape[1] - 1)
