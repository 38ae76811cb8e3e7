"""Non-LM reference simulators for survey fidelity.

``hot_deck``: each simulated person copies every answer of one real *training* respondent (the donor)
drawn from its own subgroup (probability proportional to survey weight). It needs no LM and is the bar
an LM simulator has to clear on new people; it cannot answer questions nobody in the training data was
asked, so it is defined only when the simulated questions were seen in training.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from popsim.exceptions import DataError

__all__ = ["hot_deck"]


def hot_deck(
    donors: pd.DataFrame,
    recipients: pd.DataFrame,
    by: Sequence[str],
    questions: Sequence[str],
    rng: np.random.Generator,
    *,
    weights_col: str | None = "weight",
) -> pd.DataFrame:
    """Answers for ``recipients`` copied from ``donors`` of the same subgroup.

    Args:
        donors: real training respondents: the ``by`` columns, the ``questions`` columns, optional weights.
        recipients: the simulated people: at least the ``by`` columns (other columns are kept).
        by: columns defining a recipient's subgroup, most important first. When no donor shares all of
            them, the last column is dropped and the draw retried (down to the whole donor table).
        questions: answer columns to copy.
        rng: the random generator (seeded by the caller).
        weights_col: donors are drawn with probability proportional to this column (``None``: uniform).

    Returns:
        ``recipients`` with the ``questions`` columns replaced by the donors' answers, plus ``donor``
        (the donor's row position in ``donors``) and ``donor_level`` (how many ``by`` columns matched).
    """
    missing = [c for c in [*by, *questions] if c not in donors.columns]
    if missing:
        raise DataError(f"hot_deck: donors lack columns {missing}")
    if len(donors) == 0:
        raise DataError("hot_deck: no donors")
    w = (donors[weights_col].to_numpy(float) if weights_col and weights_col in donors.columns
         else np.ones(len(donors)))
    # str() of every value, as for recipients below: a missing attribute is a cell of its own ("nan")
    keys = [donors[list(by[:level])].map(str).agg("|".join, axis=1) if level else pd.Series([""] * len(donors))
            for level in range(len(by) + 1)]
    index = [pd.Series(np.arange(len(donors))).groupby(k.to_numpy()).indices for k in keys]
    chosen, levels = [], []
    for _, row in recipients.iterrows():
        for level in range(len(by), -1, -1):
            key = "|".join(str(row[c]) for c in by[:level]) if level else ""
            pool = index[level].get(key)
            if pool is not None and len(pool) and w[pool].sum() > 0:
                p = w[pool] / w[pool].sum()
                chosen.append(int(pool[rng.choice(len(pool), p=p)]))
                levels.append(level)
                break
    out = recipients.reset_index(drop=True).copy()
    answers = donors.iloc[chosen][list(questions)].reset_index(drop=True)
    for q in questions:
        out[q] = answers[q].to_numpy()
    out["donor"] = chosen
    out["donor_level"] = levels
    return out
