"""Learned option bias: per answer scale, one offset per option added to the LM's option log-probabilities.

Why: a small LM prefers some option wordings whatever is asked (SmolLM2 answers "too much" to ~85% of GSS
spending items without exemplars, where real respondents say "too little" most). The offsets are fitted so
that a simulated calibration population's mean option probabilities, on the questions that have real
answers, match the real respondents' weighted answer shares; they then shift every question on the same
scale (the same option wordings in the same order), new questions included. Each agent's and question's
own lean survives: the offsets move the population's marginal, not the ranking within it.

A content-free divisor (Zhao et al. 2021, the LM's option distribution for the question "N/A") was tried
first on the fidelity benchmark: it helped one survey and ruined the other, because SmolLM2's content-free
distribution puts ~0 on the middle options of 4-point scales. Offsets learned from real answers cannot do
that: they are chosen to reproduce the real shares.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.special import softmax

from popsim.config import QuestionSpec

__all__ = ["OptionBias", "answer_shares"]

Scale = tuple[str, ...]


def answer_shares(answers: pd.DataFrame, questions: Iterable[QuestionSpec],
                  weights: np.ndarray | None = None) -> dict[Scale, np.ndarray]:
    """Per scale: the respondents' (weighted) answer shares, pooled over its questions.

    ``answers`` holds one column ``q_<id>`` per question with option wordings (missing answers skipped).
    """
    w = np.ones(len(answers)) if weights is None else np.asarray(weights, dtype=float)
    totals: dict[Scale, np.ndarray] = {}
    for q in questions:
        col = f"q_{q.id}"
        if q.free_text or col not in answers:
            continue
        scale = tuple(q.option_labels)
        values = answers[col].to_numpy()
        counts = np.array([w[values == option].sum() for option in scale])
        totals[scale] = totals.get(scale, 0) + counts
    return {scale: c / c.sum() for scale, c in totals.items() if c.sum() > 0}


@dataclass(frozen=True)
class OptionBias:
    """Offsets per scale; :meth:`shift` applies them, scales without offsets pass through unchanged.

    Attributes:
        offsets: scale -> one additive log-probability offset per option (zero mean).
        target: scale -> the real answer shares the offsets were fitted to (a share of 0 floored at 1e-4).
        before, after: scale -> the calibration answers' mean option probabilities without and with the
            offsets (``after`` equals ``target`` when the fit converged).
    """

    offsets: Mapping[Scale, np.ndarray]
    target: Mapping[Scale, np.ndarray] = field(default_factory=dict)
    before: Mapping[Scale, np.ndarray] = field(default_factory=dict)
    after: Mapping[Scale, np.ndarray] = field(default_factory=dict)

    @classmethod
    def fit(cls, probs: Sequence[tuple[Scale, np.ndarray]], target: Mapping[Scale, np.ndarray], *,
            max_iter: int = 2000, tol: float = 1e-6) -> OptionBias:
        """Offsets b per scale with mean_i softmax(log p_i + b) == target.

        ``probs``: (scale, option probabilities) of simulated answers. Each update adds log(target / mean) to
        b, the iterative-scaling step for matching a mean; ``after`` records what it reached. A share of
        exactly 0 is floored at 1e-4 so offsets stay finite (that option then all but disappears, on new
        questions of the scale too). Raises ``ValueError`` if the answers' probabilities are not finite.
        """
        offsets, goals, before, after = {}, {}, {}, {}
        for scale, shares in target.items():
            scale = tuple(scale)
            rows = [p for s, p in probs if tuple(s) == scale]
            if not rows:
                continue
            raw = np.asarray(rows, dtype=float)
            if not np.isfinite(raw).all():
                raise ValueError(f"non-finite option probabilities for the scale {list(scale)}")
            logp = np.log(np.clip(raw, 1e-9, None))
            goal = np.clip(np.asarray(shares, dtype=float), 1e-4, None)
            goal = goal / goal.sum()
            b = np.zeros(len(scale))
            for _ in range(max_iter):
                mean = softmax(logp + b, axis=-1).mean(0)
                if np.abs(mean - goal).max() < tol:
                    break
                b += np.log(goal) - np.log(mean)
                b -= b.mean()
            offsets[scale], goals[scale] = b, goal
            before[scale] = softmax(logp, axis=-1).mean(0)
            after[scale] = softmax(logp + b, axis=-1).mean(0)
        return cls(offsets, goals, before, after)

    def residual(self) -> float:
        """Largest gap between a fitted scale's reached and target shares (~0 when every fit converged)."""
        gaps = [np.abs(self.after[s] - self.target[s]).max() for s in self.offsets if s in self.after]
        return float(max(gaps, default=0.0))

    def shift(self, options: Sequence[str], logprobs: np.ndarray) -> np.ndarray:
        """Log-probabilities over ``options`` plus this scale's offsets (unchanged for a scale not fitted)."""
        b = self.offsets.get(tuple(options))
        return logprobs if b is None else np.asarray(logprobs, dtype=float) + b

    def adjust(self, options: Sequence[str], probs: np.ndarray) -> np.ndarray:
        """``probs`` over ``options`` with this scale's offsets added to the log-probabilities."""
        if tuple(options) not in self.offsets:
            return probs
        return softmax(self.shift(options, np.log(np.clip(np.asarray(probs, dtype=float), 1e-9, None))), axis=-1)

    def to_json(self) -> list[dict]:
        """One entry per scale, full precision (a resumed run must shift exactly as the first one did)."""
        def values(table: Mapping[Scale, np.ndarray], scale: Scale) -> list[float] | None:
            return None if scale not in table else [float(v) for v in table[scale]]

        return [{"options": list(scale), "offsets": values(self.offsets, scale), "target": values(self.target, scale),
                 "before": values(self.before, scale), "after": values(self.after, scale)}
                for scale in self.offsets]

    @classmethod
    def from_json(cls, entries: list[dict]) -> OptionBias:
        def table(key: str) -> dict[Scale, np.ndarray]:
            return {tuple(e["options"]): np.asarray(e[key], dtype=float) for e in entries if e.get(key) is not None}

        return cls(table("offsets"), table("target"), table("before"), table("after"))

