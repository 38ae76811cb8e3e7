"""Post-hoc calibration that every survey method gets alike, so that a comparison of methods compares their
answers and not who was calibrated.

A method's calibration is fitted from its OWN answers: it simulates ``calibration_agents`` training
respondents (drawn by weight; respondents in MoP's exemplar pool left out, so nobody is shown their own
answers), on the items the fit saw, exactly as ``simulation.option_bias: learned`` does in
``popsim/runner.py`` (``learn_option_bias``). From those answers it learns

- one sharpness ``s`` per method (a softmax temperature 1/s on the option log-probabilities), chosen on a grid
  as the one whose calibrated answers match the training respondents' weighted shares best *per question*
  (mean TV over the seen items between the calibration agents' mean calibrated probabilities and the real
  shares), and
- at each ``s``, option offsets per answer scale (:class:`popsim.sim.calibration.OptionBias`) that make the
  calibration answers' mean option probabilities match the training respondents' weighted shares, pooled over
  the scale's items.

Until 2026-12-07 ``s`` maximised the likelihood of each calibration agent's own respondent's answers. For LMs
that predict individuals this weakly, that likelihood grows as the answers flatten, so every method took the
grid's flattest ``s`` (0.105): its calibrated answers became the scale's pooled real shares on every item,
and all methods scored alike. The per-question criterion scores what the benchmark scores (shares per item)
and rewards a method only for the item-to-item differences it gets right.

With ``hold_out`` (protocols b and c, ``survey.calibration_transfer``), ``s`` is chosen by how well it
*transfers*: the seen items are held out one item (b) or one answer scale (c) at a time, the offsets fitted on
the others, and the held-out items scored, as the protocol's new items will be. In-sample, an LM that copies an
exemplar's answer to a seen item looked sharp and right there, and kept that sharpness on new items where it
had nothing to copy. The grid includes ``s = 0``: a method whose answers carry nothing that transfers falls
back to its scales' pooled shares (the ``scale-shares`` reference).

The calibrated answer of an agent is drawn again from ``softmax(s * log p + b)`` with the agent's own answer
stream (the raw answer came from the same stream), so raw and calibrated scores differ only by the
calibration. On a scale no seen item uses (protocol (c)) there are no offsets; only ``s`` transfers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import log_softmax

from popsim.data import Population
from popsim.eval.metrics import total_variation, weighted_distribution
from popsim.sim.calibration import OptionBias, answer_shares
from popsim.sim.model import PopulationModel

# the sharpness grid: s = 1 / temperature from 0.1 to 4 (log-spaced, 1.0 included): MoP's tau_k ~0.6 and the
# baselines' tau 1 can each be too sharp or too flat for the LM's option probabilities
SHARPNESS = 2.0 ** (np.arange(-13, 9) / 4)  # 0.105 ... 4, steps of 2^(1/4)
TRANSFER_SHARPNESS = np.concatenate([[0.0], SHARPNESS])  # with hold_out: 0 = the scale's pooled shares


@dataclass(frozen=True)
class Calibration:
    """One method's learned sharpness and option offsets; :meth:`adjust` applies them to option probabilities."""

    sharpness: float
    bias: OptionBias
    item_tv: float  # mean TV over the seen items, calibrated calibration answers vs real shares, at this fit

    def adjust(self, options, probs: np.ndarray) -> np.ndarray:
        logp = self.sharpness * np.log(np.clip(np.asarray(probs, dtype=float), 1e-9, None))
        z = log_softmax(self.bias.shift(options, log_softmax(logp)))
        return np.exp(z)

    def describe(self) -> str:
        tau = f"tau x{1 / self.sharpness:.2f}" if self.sharpness else "the scale's shares"
        return (f"s={self.sharpness:.2f} ({tau}), {len(self.bias.offsets)} scales offset, "
                f"item TV {self.item_tv:.3f}")


def calibration_rows(pop: Population, mop, n: int, seed: int) -> pd.DataFrame:
    """``n`` training respondents drawn by weight, those in MoP's exemplar pool left out (as the runner does)."""
    train = pop.train
    if mop is not None and len(mop.exemplars_.groups):
        outside = ~train["id"].astype(str).isin({str(g) for g in mop.exemplars_.groups})
        train = train[outside] if outside.any() else train
    p = train["weight"].to_numpy(float)
    idx = np.random.default_rng([seed, 2]).choice(len(train), size=n, replace=n > len(train), p=p / p.sum())
    return train.iloc[idx].reset_index(drop=True)


def fit_calibration(model: PopulationModel, rows: pd.DataFrame, pop: Population, seen: set[str], *,
                    hold_out: str = "") -> Calibration:
    """Fit a method's calibration from ``model`` (its population of calibration agents ``rows``, stepped once
    on the ``seen`` items) against the training respondents' weighted shares on those items; ``hold_out``
    (``"items"`` or ``"scales"``) chooses ``s`` by held-out items instead of in-sample (module docstring)."""
    questions = [model.question_by_id[q] for q in model.question_by_id if q in seen]
    weights = pop.train["weight"].to_numpy(float)
    target = answer_shares(pop.train, questions, weights)
    scales, probs, items = [], [], []
    for r in model.responses().itertuples():
        truth = rows.at[r.agent, f"q_{r.question}"]
        if r.question not in seen or r.probs is None or pd.isna(truth):
            continue  # only the items each calibration respondent really answered
        scale = tuple(model.question_by_id[r.question].option_labels)
        scales.append(scale)
        probs.append(np.array([r.probs[o] for o in scale], dtype=float))
        items.append(r.question)
    real = {q: weighted_distribution(pop.train[f"q_{q}"].to_numpy(object), model.question_by_id[q].option_labels,
                                     weights) for q in sorted(set(items))}
    # folds: every item scored with offsets fitted on the rest (hold_out) or on all of them (in-sample)
    by = {"items": lambda q: q, "scales": lambda q: tuple(model.question_by_id[q].option_labels)}.get(hold_out)
    folds = [{q for q in real if by(q) == key} for key in sorted({by(q) for q in real}, key=str)] if by else [set()]
    grid = TRANSFER_SHARPNESS if by else SHARPNESS
    best = None
    for s in grid:
        sharp = [np.exp(log_softmax(s * np.log(np.clip(p, 1e-9, None)))) for p in probs]
        per_item: dict[str, list[np.ndarray]] = {}
        for fold in folds:
            kept = [i for i, q in enumerate(items) if q not in fold]
            fold_target = answer_shares(pop.train, [q for q in questions if q.id not in fold], weights)
            cal = Calibration(float(s), OptionBias.fit([(scales[i], sharp[i]) for i in kept], fold_target), 0.0)
            for sc, p, q in zip(scales, probs, items, strict=True):
                if q in fold or not by:
                    per_item.setdefault(q, []).append(cal.adjust(sc, p))
        mean_tv = float(np.mean([total_variation(real[q], np.mean(per_item[q], axis=0)) for q in real]))
        if best is None or mean_tv < best.item_tv:
            best = Calibration(float(s), OptionBias.fit(list(zip(scales, sharp, strict=True)), target), mean_tv)
    assert best is not None
    return best


def redraw(model: PopulationModel, responses: pd.DataFrame, reweigh) -> pd.DataFrame:
    """Each answer drawn again from its own random stream (as the model drew it) from
    ``reweigh(response row, question, option probabilities)``: the same draws, other probabilities."""
    rows = []
    for r in responses.itertuples():
        q = model.question_by_id[r.question]
        p = np.asarray(reweigh(r, q, np.array([r.probs[o] for o in q.option_labels], dtype=float)), dtype=float)
        rng = model.answer_rng(r.agent, r.round, r.question)
        rows.append({"agent": r.agent, "round": r.round, "question": r.question,
                     "answer": q.option_labels[int(rng.choice(len(p), p=p / p.sum()))]})
    return pd.DataFrame(rows)


def calibrated(model: PopulationModel, cal: Calibration) -> pd.DataFrame:
    """``model``'s answers drawn again, on the same streams, from the calibrated probabilities."""
    return redraw(model, model.responses(), lambda r, q, p: cal.adjust(q.option_labels, p))
