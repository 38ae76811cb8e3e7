"""The report's one-screen summary: per method, overall TV against the noise floor, and plain-word verdicts.

A *family* of subgroups is every cell over the same attributes: "age" (its age groups), "party x race"
(each party-race intersection), or the whole population. Each family gets a verdict in words ("with care:
within 2x the noise floor") from the ratio of its mean TV to its mean noise floor, the TV a perfect
simulator would get at the same sizes (see :mod:`popsim.eval.subgroups`). The thresholds are the named
constants below; the report states them beside the verdicts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["WITHIN_FLOOR_RATIO", "USABLE_FLOOR_RATIO", "MAX_JUDGEABLE_FLOOR", "family_verdicts", "method_headline",
           "summary_table", "verdict_table", "thresholds"]

WITHIN_FLOOR_RATIO = 1.25
"""TV up to 1.25x the noise floor reads "within the noise floor": the simulation is about as far from the
real answers as a second real sample of the same size would be (the floor is itself an estimate; 25% slack
keeps bootstrap jitter from flipping the verdict)."""

USABLE_FLOOR_RATIO = 2.0
"""TV up to 2x the noise floor reads "with care": the simulation's own error is at most the size of the
sampling noise; beyond that it is the larger part, and the subgroups' simulated answers are not usable."""

MAX_JUDGEABLE_FLOOR = 0.15
"""A subgroup whose noise floor exceeds 0.15 TV is too small to judge: a perfect simulator would already be
15 points of TV off there on average, so good and bad simulations cannot be told apart."""


def _family(attributes: str) -> str:
    return "whole population" if attributes == "all" else "by " + attributes.replace(" & ", " x ")


def _judged(scored: pd.DataFrame) -> pd.DataFrame:
    """The scored cells large enough to judge (noise floor at most :data:`MAX_JUDGEABLE_FLOOR`)."""
    return scored[scored["noise_floor_tv"] <= MAX_JUDGEABLE_FLOOR]


def _verdict(ratio: float, judged: int, scored: int, cells: int, min_n: int, small_below: int | None) -> str:
    """A family's verdict in words, e.g. "with care: within 2x the noise floor (1.6x); 3 of 8 groups ..."."""
    if scored == 0:
        return f"not scored: every group has fewer than {min_n} real respondents"
    if judged == 0:
        return f"no: too few respondents per group to judge (noise floor above {MAX_JUDGEABLE_FLOOR:.2f})"
    if ratio <= WITHIN_FLOOR_RATIO:
        text = f"yes: within the noise floor ({ratio:.1f}x)"
    elif ratio <= USABLE_FLOOR_RATIO:
        text = f"with care: within {USABLE_FLOOR_RATIO:g}x the noise floor ({ratio:.1f}x)"
    else:
        text = f"no: {ratio:.1f}x the noise floor"
    if judged < scored:
        text += (f"; not usable below n={small_below}" if small_below
                 else f"; {scored - judged} of {scored} scored groups too small to judge")
    if scored < cells:
        text += f"; {cells - scored} under {min_n} real respondents not scored"
    return text


def family_verdicts(cells: pd.DataFrame, *, min_n: int) -> pd.DataFrame:
    """One row per method and family: counts, mean TV, mean floor, their ratio and the verdict in words.

    ``cells`` is the report's cell table (:func:`popsim.eval.subgroups.cell_fidelity` rows with a
    ``method`` column). A cell is *judged* when it is scored and its noise floor is at most
    :data:`MAX_JUDGEABLE_FLOOR`; the ratio is over judged cells. ``small_below`` is the real n under which
    every unjudged cell lies (when there is such a clean threshold), stated as "not usable below n=...".
    """
    rows = []
    for (method, attrs), c in cells.groupby(["method", "attributes"], sort=False):
        scored = c[~c["suppressed"] & c["tv"].notna()]
        judged = _judged(scored)
        ratio = judged["tv"].mean() / judged["noise_floor_tv"].mean() if len(judged) else np.nan
        unjudged = scored.drop(judged.index)  # scored but too small to judge (the unscored are counted apart)
        small_below = None
        if len(judged) and len(unjudged) and unjudged["real_n"].max() < judged["real_n"].min():
            small_below = int(judged["real_n"].min())
        rows.append({
            "method": method, "family": _family(attrs), "order": int(c["order"].iloc[0]), "cells": len(c),
            "scored": len(scored), "judged": len(judged), "mean_tv": judged["tv"].mean(),
            "mean_floor": judged["noise_floor_tv"].mean(), "ratio": ratio,
            "within_floor": int((~scored["worse_than_floor"]).sum()), "small_below": small_below,
            "verdict": _verdict(ratio, len(judged), len(scored), len(c), min_n, small_below),
        })
    return pd.DataFrame(rows)


def _tv(v: float) -> str:
    return "–" if not np.isfinite(v) else f"{v:.2f}"


def method_headline(cells: pd.DataFrame) -> pd.DataFrame:
    """Per method: overall TV (the "all" cell) with CI and its noise floor, mean TV over scored subgroup
    cells beside the mean noise floor of those cells (size-matched bootstrap, and real-vs-real split-half
    when present), share of cells worse than the floor, and how many cells were scored or suppressed."""
    rows = []
    for method, c in cells.groupby("method", sort=False):
        overall = c[c["order"] == 0].iloc[0]
        sub = c[(c["order"] > 0) & ~c["suppressed"] & c["tv"].notna()]
        judged = _judged(sub)
        rows.append({
            "method": method, "overall_tv": overall["tv"], "overall_tv_ci_low": overall["tv_ci_low"],
            "overall_tv_ci_high": overall["tv_ci_high"], "overall_noise_floor": overall["noise_floor_tv"],
            "mean_tv_cells": sub["tv"].mean(), "mean_noise_floor_cells": sub["noise_floor_tv"].mean(),
            "mean_split_half_cells": sub["split_half_tv"].mean() if "split_half_tv" in sub else np.nan,
            "share_worse_than_floor": sub["worse_than_floor"].mean() if len(sub) else np.nan,
            "n_cells_scored": len(sub), "n_cells_within_floor": int((~sub["worse_than_floor"]).sum()),
            "n_cells_judged": len(judged),
            "n_cells_judged_within_floor": int((~judged["worse_than_floor"]).sum()),
            "n_cells_judged_closer_than_everyone": (int((judged["tv"] < judged["group_vs_all_tv"]).sum())
                                                    if "group_vs_all_tv" in judged else np.nan),
            "n_cells_suppressed": int(c["suppressed"].sum()),
        })
    return pd.DataFrame(rows)


def summary_table(cells: pd.DataFrame) -> pd.DataFrame:
    """Per method, for people: overall TV, its 95% interval, the noise floor, and subgroups within the floor
    (:func:`method_headline`'s numbers, worded)."""
    rows = []
    for h in method_headline(cells).itertuples():
        floor, judged, within = h.overall_noise_floor, h.n_cells_judged, h.n_cells_judged_within_floor
        ratio = h.overall_tv / floor if floor > 0 else np.nan
        rows.append({
            "Method": h.method,
            "Overall TV (0-1, lower is better)": _tv(h.overall_tv),
            "95% interval": f"{_tv(h.overall_tv_ci_low)}–{_tv(h.overall_tv_ci_high)}",
            "Noise floor (perfect simulator's TV)": _tv(floor),
            "TV ÷ floor": "–" if not np.isfinite(ratio) else f"{ratio:.1f}x",
            "Subgroups large enough to judge, not shown worse than the floor": (
                f"{within} of {judged} ({100 * within / judged:.0f}%)" if judged else "none large enough"),
        })
        closer = h.n_cells_judged_closer_than_everyone
        if np.isfinite(closer):
            rows[-1]["... closer to the group's answers than \"it answers like everyone\""] = (
                f"{int(closer)} of {judged}" if judged else "none large enough")
    return pd.DataFrame(rows)


def verdict_table(families: pd.DataFrame, *, orders: tuple[int, ...]) -> pd.DataFrame:
    """Families of the given orders as rows, one verdict column per method ("Subgroups", then methods)."""
    f = families[families["order"].isin(orders)]
    table = f.pivot(index="family", columns="method", values="verdict")
    table = table.loc[list(dict.fromkeys(f["family"])), list(dict.fromkeys(f["method"]))]
    table.columns.name = None
    return table.reset_index().rename(columns={"family": "Subgroups"})


def thresholds(min_n: int) -> list[str]:
    """The verdict rules in words, as the report states them."""
    return [
        f"yes: a family's mean TV is at most {WITHIN_FLOOR_RATIO:g}x its mean noise floor (the TV a perfect "
        "simulator would get at the same sizes): as close as a second real sample.",
        f"with care: at most {USABLE_FLOOR_RATIO:g}x the floor; no: more than {USABLE_FLOOR_RATIO:g}x.",
        f"A family is the groups of one attribute (or of one pair of attributes). A group is too small to judge "
        f"when its noise floor is above {MAX_JUDGEABLE_FLOOR:.2f} TV (it depends on both its real respondents and "
        f"its agents), and is not scored at all below {min_n} real respondents; \"not usable below n=...\" names "
        "the real size under which every scored group of the family is too small.",
    ]
