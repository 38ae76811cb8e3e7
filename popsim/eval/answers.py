"""What each group answered: real and simulated answer shares per question, option and group.

A social scientist reads a simulation question by question: for each answer option, the share of real
held-out respondents who chose it (survey-weighted, with a 95% band for the real data's own sampling noise)
beside the share of each method's agents. :func:`question_shares` builds that long table for the whole
population and for each group of one attribute; :func:`question_errors` turns it into one row per method,
group and question: the question's TV and the option where simulation and reality differ most, in
percentage points and in words. :func:`question_order` ranks questions worst first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from popsim.eval.metrics import kish_effective_n, total_variation
from popsim.eval.subgroups import _as_labels, _attr_column, _short
from popsim.exceptions import DataError

__all__ = ["REAL", "BAND_Z", "question_shares", "question_errors", "question_order", "direction_sentence",
           "wilson_band"]

REAL = "real"
"""The ``source`` of real respondents' rows in :func:`question_shares` (methods cannot take this name)."""

BAND_Z = 1.96
"""z of the real shares' band: 95% of real samples of this size fall within it, so a simulated share inside
the band is as close as the real data can tell apart."""

_SHARE_COLUMNS = ["question", "group", "source", "option", "share", "n", "eff_n", "band_low", "band_high",
                  "suppressed"]


def wilson_band(share: np.ndarray, n: float, z: float = BAND_Z) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of binomial shares at sample size ``n`` (NaN where n is 0).

    Wilson rather than share +- z*se: it stays inside [0, 1] and is not zero-width at shares of 0 or 1,
    which small groups often show. With survey weights, pass Kish's effective n.
    """
    p = np.asarray(share, dtype=float)
    if n <= 0:
        nan = np.full_like(p, np.nan)
        return nan, nan
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)


def _groups(real: pd.DataFrame, by: str | None) -> list[tuple[str, str | None, Any]]:
    """("all", None, None) then (name, column, value) per observed value of ``by`` (category order if any)."""
    out: list[tuple[str, str | None, Any]] = [("all", None, None)]
    if by is None:
        return out
    col = _attr_column(real, by)
    raw = real[col]
    values = [str(v) for v in raw.cat.categories] if isinstance(raw.dtype, pd.CategoricalDtype) else []
    labels = _as_labels(raw).dropna()
    present = set(labels)
    ordered = [v for v in values if v in present] or sorted(present)
    return out + [(f"{_short(col)}={v}", col, v) for v in ordered]


def _shares(answers: pd.Series, options: list[str], weights: np.ndarray) -> tuple[np.ndarray, int, float]:
    """Weighted shares of ``options``, respondents who chose one, and their Kish effective n."""
    labels = _as_labels(answers).to_numpy()
    ok = np.isin(labels, options) & (weights > 0)
    if not ok.any():
        return np.full(len(options), np.nan), 0, 0.0
    w = weights[ok]
    totals = np.array([w[labels[ok] == o].sum() for o in options])
    return totals / totals.sum(), int(ok.sum()), kish_effective_n(w)


def question_shares(
    runs: Mapping[str, pd.DataFrame],
    real: pd.DataFrame,
    options: Mapping[str, Sequence[Any]],
    *,
    by: str | None = None,
    weights_col: str | None = "weight",
    min_n: int = 20,
) -> pd.DataFrame:
    """Long table of answer shares: one row per question, group, source (``"real"`` or a method) and option.

    ``runs`` maps a method to its wide respondent table (one row per agent, question columns of answer labels,
    ``attr_*`` columns; see :func:`popsim.eval.subgroups.respondent_table`); ``real`` is the wide held-out
    table, weighted by ``weights_col`` when present; a method's agents count by their ``weight`` column when
    present. Groups are "all" and, with ``by``, each value of that
    attribute. Columns: question, group, source, option, share (0-1), n (respondents who answered),
    eff_n (Kish), band_low / band_high (the real share's 95% Wilson band at eff_n; NaN for methods) and
    suppressed (fewer than ``min_n`` real respondents answered in the group: too few to compare).
    """
    if REAL in runs:
        raise DataError(f"a method cannot be called {REAL!r}: that name is kept for the real respondents")
    if weights_col and weights_col in real.columns:
        weights = pd.to_numeric(real[weights_col], errors="coerce").fillna(0).to_numpy(float)
    else:
        weights = np.ones(len(real))
    rows = []
    for question, opts in options.items():
        opts = [str(o) for o in opts]
        for frame in (real, *runs.values()):
            if question not in frame.columns:
                raise DataError(f"question `{question}` is in `options` but not in every table; drop it")
        for group, col, value in _groups(real, by):
            in_real = np.ones(len(real), bool) if col is None else (_as_labels(real[col]) == value).to_numpy()
            p, n, eff = _shares(real.loc[in_real, question], opts, weights[in_real])
            low, high = wilson_band(p, eff)
            suppressed = n < min_n
            rows += [dict(question=question, group=group, source=REAL, option=o, share=p[k], n=n, eff_n=eff,
                          band_low=low[k], band_high=high[k], suppressed=suppressed) for k, o in enumerate(opts)]
            for method, frame in runs.items():
                mask = np.ones(len(frame), bool)
                if col is not None:
                    mask = (_as_labels(frame[_attr_column(frame, col)]) == value).to_numpy()
                agent_w = (pd.to_numeric(frame["weight"]).to_numpy(float)[mask] if "weight" in frame.columns
                           else np.ones(int(mask.sum())))
                ps, ns, eff_s = _shares(frame.loc[mask, question], opts, agent_w)
                rows += [dict(question=question, group=group, source=method, option=o, share=ps[k], n=ns,
                              eff_n=eff_s, band_low=np.nan, band_high=np.nan, suppressed=suppressed)
                         for k, o in enumerate(opts)]
    return pd.DataFrame(rows, columns=_SHARE_COLUMNS)


def direction_sentence(method: str, option: str, real_share: float, sim_share: float) -> str:
    """The error of one question in words: which option the method over- or under-states, by how much."""
    if not np.isfinite(real_share) or not np.isfinite(sim_share):
        return f"{method}: no answers to compare"
    sim_pct, real_pct = round(100 * sim_share), round(100 * real_share)
    gap = sim_pct - real_pct  # from the rounded shares, so that the sentence adds up as printed
    if gap == 0:
        return f"{method} matches real respondents on every option (within 1 point)"
    more, points = ("more" if gap > 0 else "less"), ("point" if abs(gap) == 1 else "points")
    return (f"{method} says '{option}' {abs(gap)} {points} {more} often than real respondents "
            f"({sim_pct}% vs {real_pct}%)")


def question_errors(shares: pd.DataFrame) -> pd.DataFrame:
    """One row per method, group and question: TV and the option with the largest simulated-minus-real gap.

    Columns: method, group, question, tv, option, real_share, sim_share, gap_pp (percentage points, positive
    when the method chooses the option more often than real respondents), in_band (the method's share of
    that option lies inside the real band), real_n, sim_n, suppressed, direction (the gap in words).
    """
    real = shares[shares["source"] == REAL].set_index(["question", "group", "option"])
    rows = []
    for (method, group, question), s in shares[shares["source"] != REAL].groupby(
            ["source", "group", "question"], sort=False):
        r = real.loc[[(question, group, o) for o in s["option"]]]
        p, q = r["share"].to_numpy(float), s["share"].to_numpy(float)
        row = dict(method=method, group=group, question=question, tv=np.nan, option=None, real_share=np.nan,
                   sim_share=np.nan, gap_pp=np.nan, in_band=False, real_n=int(r["n"].iloc[0]),
                   sim_n=int(s["n"].iloc[0]), suppressed=bool(r["suppressed"].iloc[0]))
        if np.isfinite(p).all() and np.isfinite(q).all():
            k = int(np.argmax(np.abs(q - p)))
            row.update(tv=total_variation(p, q), option=s["option"].iloc[k], real_share=p[k], sim_share=q[k],
                       gap_pp=100 * (q[k] - p[k]),
                       in_band=bool(r["band_low"].iloc[k] <= q[k] <= r["band_high"].iloc[k]))
        row["direction"] = direction_sentence(method, row["option"], row["real_share"], row["sim_share"])
        rows.append(row)
    return pd.DataFrame(rows)


def question_order(errors: pd.DataFrame, *, method: str | None = None) -> list[str]:
    """Question ids, worst first: by ``method``'s whole-population TV (default: the first method listed).

    One method sets the order so that the panels follow the simulation being judged; baselines such as
    uniform answering are read beside it, not ranked on their own.
    """
    if errors.empty:
        return []
    method = errors["method"].iloc[0] if method is None else method
    whole = errors[(errors["method"] == method) & (errors["group"] == "all")]
    if whole.empty:
        known = sorted(set(errors["method"]))
        raise DataError(f"no whole-population errors for method {method!r}; pick one of {known}")
    ranked = whole.sort_values("tv", ascending=False, na_position="last", kind="stable")
    return ranked["question"].tolist()
