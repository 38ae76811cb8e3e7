"""``MixtureOfPersonas``: the sklearn-style MoP estimator (Bui et al., Findings of ACL 2025).

    p(y | x) = sum_k sum_j pi_k(x) Omega_kj(x) p_LM^{tau_k}(y | persona g_k, exemplar (x_j, y_j), x)

``fit`` synthesises personas (or takes the user's), embeds records and exemplars with the frozen encoder,
and trains the gates and temperatures by maximum likelihood over the top-M (k, j) pairs per record,
the record's own exemplar masked out, with the LM frozen. ``sample`` draws persona, exemplar and
temperature for a population of contexts. The objective (:mod:`~popsim.mop.objective`), the calibrated
priors (:mod:`~popsim.mop.calibration`), held-out likelihood (:mod:`~popsim.mop.likelihood`) and
persistence (:mod:`~popsim.mop.persistence`, safetensors + JSON, never pickle) live in their own modules.
"""

from __future__ import annotations

import inspect
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from popsim.embed import SentenceEncoder
from popsim.exceptions import DataError, NotFittedError
from popsim.lm.base import LanguageModel, Prompt
from popsim.mop import calibration
from popsim.mop.gating import MixtureGate
from popsim.mop.likelihood import held_out_log_likelihood
from popsim.mop.objective import PairObjective
from popsim.mop.persistence import load_model, save_model
from popsim.mop.personas import synthesize_personas, user_personas
from popsim.mop.presets import PRESET_KEYS, PRESETS, resolve_preset
from popsim.mop.prompts import PromptStyle, build_prompt
from popsim.mop.scoring import ScoreCache
from popsim.records import ExemplarPool, Records

__all__ = ["MixtureOfPersonas", "embed_pairs"]


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
        preset: ``tuned`` (the default: what won on the fidelity benchmark's dev splits) or ``paper`` (the
            paper's plain choices); see :mod:`popsim.mop.presets`. Every parameter that defaults to ``None``
            below takes the preset's value at ``fit`` (for multiple-choice or free-text records); the
            values used are in :attr:`settings_`.
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
        preset: str = "tuned",
        n_personas: int = 8,
        n_exemplars: int = 200,
        top_m: int = 4,
        dim: int = 128,
        tau_init: float | None = None,
        personas: Sequence[str] | None = None,
        style: PromptStyle | None = None,
        learning_rate: float = 0.003,
        tau_learning_rate: float | None = None,
        epochs: int = 4,
        batch_size: int = 32,
        patience: int = 2,
        val_fraction: float = 0.15,
        max_train_records: int | None = 256,
        balance: float | None = None,
        stickiness: float | None = None,
        mask_answered: bool = False,
        gate_init_scale: float | None = None,
        pair_embedding: str | None = None,
        calibrate_exemplars: bool | None = None,
        persona_gate_init: str | None = None,
        calibrate_personas: bool | None = None,
        check_personas: bool | None = None,
        learn_option_offsets: bool | None = None,
        offset_learning_rate: float = 0.1,
        cache_path: str | Path | None = None,
        random_state: int = 0,
        verbose: bool = True,
    ) -> None:
        # sklearn's contract: store every hyper-parameter as given, validate and resolve in fit
        for name, value in locals().items():
            if name != "self":
                setattr(self, name, value)

    # ------------------------------------------------------------------ sklearn plumbing
    @classmethod
    def _param_names(cls) -> list[str]:
        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]

    def get_params(self, deep: bool = False) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> MixtureOfPersonas:
        for key, value in params.items():
            if key not in self._param_names():
                raise ValueError(f"MixtureOfPersonas has no parameter {key!r}")
            setattr(self, key, value)
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "gate_"):
            raise NotFittedError("this MixtureOfPersonas is not fitted yet; call fit(records) or load(dir)")

    def resolved_settings(self, *, free_text: bool) -> dict[str, Any]:
        """The preset's settings for these records' kind, with every parameter the user set on top."""
        if self.preset not in PRESETS:
            raise DataError(f"mop.preset must be one of {', '.join(PRESETS)}; got {self.preset!r}")
        return resolve_preset(self.preset, free_text=free_text, overrides={k: getattr(self, k) for k in PRESET_KEYS})

    def _validate(self, s: dict[str, Any]) -> None:
        checks = {
            "n_personas": self.n_personas >= 1, "n_exemplars": self.n_exemplars >= 1, "top_m": self.top_m >= 1,
            "dim": self.dim >= 1, "tau_init": s["tau_init"] > 0, "learning_rate": self.learning_rate > 0,
            "tau_learning_rate": s["tau_learning_rate"] >= 0, "offset_learning_rate": self.offset_learning_rate > 0,
            "epochs": self.epochs >= 1, "batch_size": self.batch_size >= 1,
            "val_fraction": 0 <= self.val_fraction < 1, "stickiness": s["stickiness"] >= 1,
            "gate_init_scale": s["gate_init_scale"] >= 0, "balance": s["balance"] >= 0,
            "pair_embedding": s["pair_embedding"] in {"mean", "joint"},
            "persona_gate_init": s["persona_gate_init"] in {"uniform", "clusters"},
        }
        for name, ok in checks.items():
            if not ok:
                raise DataError(f"mop.{name} is out of range; got {s.get(name, getattr(self, name, None))!r}")
        if s["persona_gate_init"] == "clusters" and s["gate_init_scale"] <= 0:
            raise DataError("mop.persona_gate_init 'clusters' needs mop.gate_init_scale > 0 (it starts from the "
                            "similarity-initialised projections); set both, or persona_gate_init 'uniform'")
        if self.lm is None or self.encoder is None:
            raise DataError("MixtureOfPersonas needs lm= and encoder= to fit")

    # ------------------------------------------------------------------ fit
    def fit(self, records: Records, exemplars: ExemplarPool | None = None) -> MixtureOfPersonas:
        """Fit personas, exemplar pool, gates and temperatures to ``records``; returns self."""
        t0 = time.perf_counter()
        self.settings_ = self.resolved_settings(free_text=all(o is None for o in records.options))
        self._validate(self.settings_)
        rng = np.random.default_rng(self.random_state)
        self.style_ = self.style or PromptStyle()
        self._build_pool_and_personas(records, exemplars)
        train_set = self._training_subset(records, rng)
        train_idx, val_idx = self._split(train_set, rng)
        h_x = torch.from_numpy(self.encoder.encode(train_set.gate_inputs))
        self._start_gates(h_x, records)
        self.cache_ = ScoreCache(self.lm, self.cache_path)
        self._init_option_offsets(records)
        objective = PairObjective(self, train_set, h_x)
        best = self._train(objective, self._optimizer(), train_idx, val_idx, rng)
        self._finish(records)
        self.fit_info_ = {
            "seconds": time.perf_counter() - t0, "n_records": len(train_set), "n_train": len(train_idx),
            "n_val": len(val_idx), "best_val_loss": best, "cache_hits": self.cache_.hits,
            "cache_misses": self.cache_.misses, "cache_hit_rate": self.cache_.hit_rate,
        }
        self.lm_name_, self.encoder_name_ = self.lm.name, self.encoder.name
        self.lm_identity_ = self.lm.identity  # weights' digest, dtype, ...: which scores trained the gates
        return self

    def _build_pool_and_personas(self, records: Records, exemplars: ExemplarPool | None) -> None:
        """The exemplar pool, its pair embeddings, and the personas (synthesised from the pool, or the user's)."""
        pool = exemplars or ExemplarPool.from_records(records, self.n_exemplars, seed=self.random_state)
        if exemplars is not None and not exemplars.has_groups:
            warnings.warn("the exemplar pool has no groups, so no record's own exemplar can be masked; pass "
                          "ExemplarPool(..., groups=[respondent id per exemplar]) if its members are records",
                          stacklevel=3)
        h_e = embed_pairs(self.encoder, pool, self.settings_["pair_embedding"])
        if self.personas is not None:
            personas, labels = user_personas(self.personas), None
        else:
            personas, labels = synthesize_personas(
                pool.texts, h_e, n_personas=self.n_personas, lm=self.lm, attributes=pool.attributes,
                seed=self.random_state, check_encoder=self.encoder if self.settings_["check_personas"] else None,
            )
        self.personas_, self.exemplars_, self.persona_labels_ = personas, pool, labels
        self.h_g_ = torch.from_numpy(self.encoder.encode([p.text for p in personas]))
        self.h_e_ = torch.from_numpy(h_e)

    def _training_subset(self, records: Records, rng: np.random.Generator) -> Records:
        """At most ``max_train_records`` records (LM scoring is the cost), seeded, of weight > 0 (0 teaches nothing)."""
        records = records.subset(np.flatnonzero(records.weights > 0)) if (records.weights <= 0).any() else records
        if self.max_train_records and len(records) > self.max_train_records:
            return records.subset(np.sort(rng.choice(len(records), self.max_train_records, replace=False)))
        return records

    def _split(self, records: Records, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(train rows, validation rows) for early stopping; no validation below 10 records."""
        order = rng.permutation(len(records))
        n_val = int(round(self.val_fraction * len(records))) if len(records) >= 10 else 0
        return order[n_val:], order[:n_val]

    def _start_gates(self, h_x: torch.Tensor, records: Records) -> None:
        """The gate at its starting point: random, retrieval or cluster-started, with calibrated priors."""
        s = self.settings_
        with torch.random.fork_rng():
            torch.manual_seed(self.random_state)
            self.gate_ = MixtureGate(self.h_e_.shape[1], len(self.personas_), dim=self.dim, tau_init=s["tau_init"])
        if s["gate_init_scale"] > 0:
            self.gate_.init_similarity(torch.cat([h_x, self.h_e_, self.h_g_]), s["gate_init_scale"])
            if s["persona_gate_init"] == "clusters":
                self.gate_.init_persona_targets(self.h_g_, calibration.persona_centroids(self))
        self.persona_bias_ = torch.zeros(len(self.personas_))
        self.exemplar_bias_ = torch.zeros(len(self.exemplars_))
        if s["calibrate_personas"]:  # start training from the calibrated prior, and calibrate again after
            self.persona_bias_ = calibration.calibrated_persona_bias(self, records)

    def _init_option_offsets(self, records: Records) -> None:
        """Zero offsets for every answer scale of the data (not only of the subsample scored in training:
        a scale left out would keep no offsets)."""
        learn = self.settings_["learn_option_offsets"]
        scales = sorted({o for o in records.options if o is not None}) if learn else []
        self.option_offset_params_ = {s: torch.zeros(len(s), requires_grad=True) for s in scales}

    def _optimizer(self) -> torch.optim.Optimizer:
        """Adam with one step size for the projections, one for the temperatures, one for the offsets."""
        projections = [p for name, p in self.gate_.named_parameters() if name != "log_tau"]
        groups = [{"params": projections, "lr": self.learning_rate},
                  {"params": [self.gate_.log_tau], "lr": self.settings_["tau_learning_rate"]}]
        if self.option_offset_params_:
            groups.append({"params": list(self.option_offset_params_.values()), "lr": self.offset_learning_rate})
        return torch.optim.Adam(groups)

    def _train(self, objective: PairObjective, optimizer: torch.optim.Optimizer, train_idx: np.ndarray,
               val_idx: np.ndarray, rng: np.random.Generator) -> float:
        """Epochs of Adam steps with early stopping on the validation loss; keeps the best epoch's state."""
        best, best_state, bad_epochs, self.history_ = float("inf"), None, 0, []
        for epoch in range(self.epochs):
            t_epoch = time.perf_counter()
            self.gate_.train()
            perm = rng.permutation(train_idx)
            batches = [perm[i : i + self.batch_size] for i in range(0, len(perm), self.batch_size)]
            train_loss = 0.0
            bar = tqdm(batches, desc=f"MoP epoch {epoch + 1}/{self.epochs}", disable=not self.verbose, leave=False)
            for batch in bar:
                loss = objective.loss(batch, balance=self.settings_["balance"])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                train_loss += float(loss.detach()) * len(batch)
                bar.set_postfix(loss=f"{float(loss.detach()):.3f}", cache=f"{self.cache_.hit_rate:.0%}")
            train_loss /= max(len(train_idx), 1)
            val_loss = objective.mean_loss(val_idx) if len(val_idx) else train_loss
            self.history_.append({"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss,
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
        return best

    def _finish(self, records: Records) -> None:
        """Freeze: centred offsets (a constant shift of a scale's offsets changes nothing), calibrated priors."""
        self.option_offset_params_ = {s: (p - p.mean()).detach() for s, p in self.option_offset_params_.items()}
        self.gate_.eval()
        if self.settings_["calibrate_personas"]:
            self.persona_bias_ = calibration.calibrated_persona_bias(self, records)
        if self.settings_["calibrate_exemplars"]:
            self.exemplar_bias_ = calibration.calibrated_exemplar_bias(self, records)

    # ------------------------------------------------------------------ prompts and offsets
    def prompt(self, k: int | None, j: int | None, context: str, question_id: str | None = None) -> Prompt:
        """The prompt for persona k, exemplar j and context (``None`` leaves the part out); ``question_id``:
        the survey question asked (:meth:`ExemplarPool.output_for`)."""
        self._check_fitted()
        persona = None if k is None else self.personas_[k].text
        exemplar = None if j is None else (self.exemplars_.inputs[j], self.exemplars_.output_for(j, question_id))
        return build_prompt(persona, exemplar, context, self.style_)

    def offsets_for(
        self, options: Sequence[tuple[str, ...] | None], method: str = "mop"
    ) -> list[torch.Tensor | None] | None:
        """Each row's learned option offsets for ``method`` (only MoP has them; ``None`` for free text or a
        scale never trained on)."""
        table = getattr(self, "option_offset_params_", {}) if method == "mop" else {}
        return [table.get(tuple(o)) if o is not None else None for o in options] if table else None

    @property
    def option_offsets_(self) -> dict[tuple[str, ...], np.ndarray]:
        """Learned offsets per answer scale (``learn_option_offsets``; empty without): add them to the LM's
        option log-probabilities of any question on that scale, as training did."""
        self._check_fitted()
        return {s: p.detach().double().numpy().copy() for s, p in self.option_offset_params_.items()}

    # ------------------------------------------------------------------ inference
    def mixing_weights(self, contexts: Sequence[str]) -> np.ndarray:
        """pi(x) for each context: array (n, K)."""
        self._check_fitted()
        with torch.no_grad():
            h_x = torch.from_numpy(self.encoder.encode(list(contexts)))
            return self.gate_.persona_logits(h_x, self.h_g_, self.persona_bias_).softmax(-1).numpy()

    def exemplar_weights(self, contexts: Sequence[str], personas: Sequence[int]) -> np.ndarray:
        """Omega_k(x) over the pool for one persona per context: array (n, N)."""
        self._check_fitted()
        with torch.no_grad():
            h_x = torch.from_numpy(self.encoder.encode(list(contexts)))
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
        """Held-out log-likelihood per record and y's token count (see :func:`held_out_log_likelihood`)."""
        self._check_fitted()
        return held_out_log_likelihood(self, records, method=method, n_samples=n_samples, seed=seed,
                                       exact_pairs=exact_pairs)

    def cache_for_eval(self) -> ScoreCache:
        if not hasattr(self, "cache_"):
            self.cache_ = ScoreCache(self.lm, self.cache_path)
        return self.cache_

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> Path:
        """Write ``gate.safetensors`` and ``mop.json`` (personas, exemplars, settings, provenance)."""
        self._check_fitted()
        return save_model(self, directory)

    @classmethod
    def load(
        cls, directory: str | Path, *, lm: LanguageModel | None = None, encoder: SentenceEncoder | None = None
    ) -> MixtureOfPersonas:
        """Load a saved model. ``lm`` may differ from the one it was fitted with (gates transfer)."""
        return load_model(cls, directory, lm=lm, encoder=encoder)


def embed_pairs(encoder: SentenceEncoder, pool: ExemplarPool, how: str = "joint") -> np.ndarray:
    """h(x_j, y_j) for every exemplar: ``mean`` = normalised h(x_j) + h(y_j); ``joint`` = h(x_j + y_j)."""
    if how == "joint":
        return encoder.encode(pool.texts)
    pair = encoder.encode(list(pool.inputs)) + encoder.encode(list(pool.outputs))
    return (pair / np.linalg.norm(pair, axis=1, keepdims=True).clip(1e-12)).astype(np.float32)


def _sample_rows(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One categorical draw per row of ``probs`` (rows sum to 1), vectorised via inverse CDF."""
    cdf = np.cumsum(probs, axis=1)
    u = rng.random(probs.shape[0]) * cdf[:, -1]
    return np.minimum((cdf < u[:, None]).sum(axis=1), probs.shape[1] - 1)
