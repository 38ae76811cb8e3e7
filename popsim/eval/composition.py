"""Who each persona speaks for: the make-up of the agents that drew it, by observed attribute."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from popsim.eval.subgroups import _as_labels, _attr_column, _short, respondent_table
from popsim.exceptions import DataError

__all__ = ["persona_composition"]


def persona_composition(
    synth: pd.DataFrame, attributes: Sequence[str], persona_col: str = "persona"
) -> pd.DataFrame:
    """Share of each attribute value among each persona's synthetic agents (last round).

    Long table with columns persona, n_agents, attribute, value, share; shares sum to 1 per
    (persona, attribute) over agents whose attribute is known.
    """
    wide = respondent_table(synth)
    if persona_col not in wide.columns:
        raise DataError(f"`persona_col` {persona_col!r} is not a column of the synthetic responses")
    sizes = wide.groupby(persona_col).size()
    parts = []
    for a in attributes:
        values = _as_labels(wide[_attr_column(wide, a)])
        shares = pd.crosstab(wide[persona_col], values, normalize="index").stack()
        part = shares.rename("share").rename_axis([persona_col, "value"]).reset_index()
        part.insert(1, "attribute", _short(a))
        parts.append(part)
    out = pd.concat(parts, ignore_index=True).rename(columns={persona_col: "persona"})
    out.insert(1, "n_agents", out["persona"].map(sizes).astype(int))
    return out.sort_values(["persona", "attribute", "value"]).reset_index(drop=True)
