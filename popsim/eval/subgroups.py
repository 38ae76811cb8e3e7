"""Subgroup fidelity: how closely simulated answers match real ones within demographic cells.

A *cell* is the whole population (``"all"``), one attribute value (``"sex=female"``) or an intersection
(``"sex=female & race=black"``). Cells are taken from the values observed in the real table. Both tables
are one row per respondent: question columns hold answer labels, attribute columns are named
``attr_<name>``; a long ``responses.parquet`` frame is turned into that shape by :func:`respondent_table`
(last round only). Real figures honour survey weights; synthetic respondents count by their ``weight``
column when the run has one (a run aimed at target margins or oversampling small cells), else once each.

Uncertainty (seeded, ``n_boot`` replicates per cell):

* ``tv_ci_low`` / ``tv_ci_high``: respondents are resampled with replacement within the cell, in the real
  table (keeping their weights) and in the synthetic one, and the question-mean TV is recomputed. TV is
  biased upward under resampling, so the interval is the 2.5-97.5 percentile range of the replicates
  re-centred on the point estimate (``tv + q(TV* - mean TV*)``), clipped to [0, 1].
* ``noise_floor_tv``: the expected TV of a *perfect* simulator at this cell's sizes, by plug-in bootstrap
  with the real cell's weighted distribution as the truth. Each replicate draws ``synth_n`` "perfect
  synthetic" respondents from the real cell's rows (probability proportional to weight, counted
  unweighted), resamples the real cell's ``real_n`` rows with replacement (keeping weights), and takes
  the question-mean TV between the two. The floor is the mean over replicates. It therefore includes both
  the simulator's sampling noise at ``synth_n`` and the real cell's own noise at ``real_n`` (and weights).
* ``worse_than_floor``: ``tv_ci_low > noise_floor_tv``.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from popsim.eval.metrics import (
    column_weights,
    js_distance,
    kish_effective_n,
    representativeness,
    total_variation,
    weighted_distribution,
)
from popsim.exceptions import DataError

__all__ = [
    "Cell",
    "respondent_table",
    "subgroup_cells",
    "cell_question_fidelity",
    "cell_fidelity",
    "noise_floor_curve",
    "split_half_noise_floor",
]

_AGENT_COLUMNS = ("persona", "exemplar", "temperature", "weight", "arm")
_MAX_BOOT_CELLS = 4_000_000  # replicate x respondent entries held at once


class Cell(NamedTuple):
    """A subgroup: its display name and the (column, value) conditions defining it (empty for "all")."""

    name: str
    conditions: tuple[tuple[str, str], ...]

    @property
    def order(self) -> int:
        return len(self.conditions)

    @property
    def attributes(self) -> str:
        return " & ".join(_short(c) for c, _ in self.conditions) or "all"

    def mask(self, frame: pd.DataFrame) -> np.ndarray:
        """Boolean row mask of ``frame`` for this cell."""
        m = np.ones(len(frame), dtype=bool)
        for col, value in self.conditions:
            m &= np.asarray(_as_labels(frame[col]).to_numpy() == value, dtype=bool)
        return m


def _short(col: str) -> str:
    return col[5:] if col.startswith("attr_") else col


def _attr_column(frame: pd.DataFrame, name: str) -> str:
    for col in (name, f"attr_{name}"):
        if col in frame.columns:
            return col
    raise DataError(f"attribute `{name}` has no column `attr_{_short(name)}` in the table; check `attributes`")


def _as_labels(col: pd.Series) -> pd.Series:
    """Non-missing values as text (integral floats without ".0"), missing ones as NaN."""
    known = col.notna().to_numpy()
    out = col.astype(object).where(known, np.nan)
    if pd.api.types.infer_dtype(out, skipna=True) not in ("string", "empty"):
        out[known] = [str(int(v)) if isinstance(v, float) and v.is_integer() else str(v) for v in out[known]]
    return out


def respondent_table(responses: pd.DataFrame, *, round: int | None = None) -> pd.DataFrame:  # noqa: A002
    """One row per agent from a long ``responses`` frame (one row per agent, round, question).

    Keeps round ``round`` (default: the last round); question ids become columns of answer labels; the
    ``attr_*``, ``persona``, ``exemplar``, ``temperature``, ``weight`` and ``arm`` columns are taken from each
    agent's first row.
    A frame without ``agent``/``question``/``answer`` columns is taken to be wide already and returned copied.
    """
    if not {"agent", "question", "answer"} <= set(responses.columns):
        return responses.copy()
    r = responses
    if "round" in r.columns and len(r):
        r = r[r["round"] == (r["round"].max() if round is None else round)]
    if r.empty:
        raise DataError(f"no responses in round {round}; pick a round present in the run")
    r = r.drop_duplicates(["agent", "question"], keep="last")
    wide = r.pivot(index="agent", columns="question", values="answer")
    keep = [c for c in r.columns if c.startswith("attr_") or c in _AGENT_COLUMNS]
    if keep:
        wide = wide.join(r.groupby("agent")[keep].first())
    wide.columns.name = None
    return wide.reset_index()


def subgroup_cells(frame: pd.DataFrame, attributes: Sequence[str], *, max_order: int = 2) -> list[Cell]:
    """All cells up to ``max_order`` attributes: "all", each observed value, each observed intersection.

    ``attributes`` may be given as ``"sex"`` or ``"attr_sex"``. Values are compared as text.
    """
    if not isinstance(max_order, int) or max_order < 0:
        raise DataError(f"`max_order` must be a non-negative integer; got {max_order!r}")
    cols = [_attr_column(frame, a) for a in attributes]
    if len(set(cols)) != len(cols):
        raise DataError(f"`attributes` has duplicates: {list(attributes)}")
    labels = pd.DataFrame({c: _as_labels(frame[c]) for c in cols})
    cells = [Cell("all", ())]
    for order in range(1, min(max_order, len(cols)) + 1):
        for combo in itertools.combinations(cols, order):
            values = labels[list(combo)].dropna().drop_duplicates()
            for row in sorted(values.itertuples(index=False, name=None)):
                conds = tuple(zip(combo, row))
                cells.append(Cell(" & ".join(f"{_short(c)}={v}" for c, v in conds), conds))
    return cells


# ----------------------------------------------------------------------------------------------------
# shared preparation


class _Prepared(NamedTuple):
    real: pd.DataFrame
    synth: pd.DataFrame
    questions: list[str]
    options: dict[str, list[str]]
    weights: np.ndarray
    real_codes: np.ndarray  # (n_real, n_questions), -1 = missing / not an option
    synth_codes: np.ndarray
    cells: list[Cell]
    synth_weights: np.ndarray  # the agents' weights (ones when the run has none)


def _check_options(options: Mapping[str, Sequence[Any]]) -> dict[str, list[str]]:
    if not options:
        raise DataError("`options` is empty; pass {question: [option labels in order]}")
    out = {str(q): [str(o) for o in opts] for q, opts in options.items()}
    for q, opts in out.items():
        if not opts or len(set(opts)) != len(opts):
            raise DataError(f"options of question `{q}` must be non-empty and unique; got {opts}")
    return out


def _canonical(frame: pd.DataFrame, attributes: Sequence[str], questions: list[str], name: str) -> pd.DataFrame:
    missing = [q for q in questions if q not in frame.columns]
    if missing:
        raise DataError(f"questions {missing} are in `options` but not in the {name} table; drop them from `options`")
    out = pd.DataFrame({q: _as_labels(frame[q]) for q in questions}, index=frame.index)
    for a in attributes:
        out[f"attr_{_short(a)}"] = _as_labels(frame[_attr_column(frame, a)])
    return out.reset_index(drop=True)


def _codes(frame: pd.DataFrame, questions: list[str], options: dict[str, list[str]]) -> np.ndarray:
    cols = [pd.Categorical(frame[q], categories=options[q]).codes for q in questions]
    return np.stack(cols, axis=1).astype(np.int64) if cols else np.zeros((len(frame), 0), np.int64)


def _prepare(synth, real, options, attributes, max_order, weights_col) -> _Prepared:
    opts = _check_options(options)
    questions = list(opts)
    synth_w = respondent_table(synth)
    r = _canonical(real, attributes, questions, "real")
    s = _canonical(synth_w, attributes, questions, "synthetic")
    for col in _AGENT_COLUMNS:
        if col in synth_w.columns:
            s[col] = synth_w[col].to_numpy()
    cells = subgroup_cells(r, [f"attr_{_short(a)}" for a in attributes], max_order=max_order)
    return _Prepared(r, s, questions, opts, column_weights(real, weights_col), _codes(r, questions, opts),
                     _codes(s, questions, opts), cells, column_weights(synth_w, "weight"))


def _point_rows(p: _Prepared, cell: Cell, min_n: int, mr: np.ndarray, ms: np.ndarray) -> list[dict[str, Any]]:
    """Per-question point estimates for one cell (``mr`` / ``ms``: its real / synthetic row masks)."""
    rows = []
    for j, q in enumerate(p.questions):
        rc, sc, w = p.real_codes[mr, j], p.synth_codes[ms, j], p.weights[mr]
        ok_r, ok_s = rc >= 0, sc >= 0
        row = {"cell": cell.name, "attributes": cell.attributes, "order": cell.order, "question": q,
               "real_n": int(ok_r.sum()), "synth_n": int(ok_s.sum()), "tv": np.nan, "js": np.nan,
               "representativeness": np.nan}
        row["suppressed"] = row["real_n"] < min_n
        if not row["suppressed"] and w[ok_r].sum() > 0 and ok_s.any():
            opts = p.options[q]
            pr = weighted_distribution(p.real.loc[mr, q].to_numpy(), opts, w)
            ps = weighted_distribution(p.synth.loc[ms, q].to_numpy(), opts, p.synth_weights[ms])
            row["tv"], row["js"] = total_variation(pr, ps), js_distance(pr, ps)
            row["representativeness"] = representativeness(pr, ps) if len(opts) > 1 else np.nan
        rows.append(row)
    return rows


def cell_question_fidelity(
    synth: pd.DataFrame,
    real: pd.DataFrame,
    options: Mapping[str, Sequence[Any]],
    attributes: Sequence[str],
    *,
    max_order: int = 2,
    min_n: int = 20,
    weights_col: str | None = "weight",
) -> pd.DataFrame:
    """Long table, one row per (cell, question): answered counts, TV, JS distance, representativeness.

    Point estimates only; a row is suppressed (figures NaN) when fewer than ``min_n`` real respondents of
    the cell answered the question.
    """
    p = _prepare(synth, real, options, attributes, max_order, weights_col)
    rows = [row for c in p.cells for row in _point_rows(p, c, min_n, c.mask(p.real), c.mask(p.synth))]
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------------
# bootstrap


def _onehot(codes: np.ndarray, k: int) -> np.ndarray:
    return (codes[:, None] == np.arange(k)[None, :]).astype(float)


def _norm(counts: np.ndarray) -> np.ndarray:
    total = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, counts / total, np.nan)


def _tv_rows(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Row-wise :func:`total_variation` of two (replicates, options) share arrays; NaN rows stay NaN."""
    return 0.5 * np.abs(p - q).sum(axis=1)


def _qmean(tv: np.ndarray) -> np.ndarray:
    out = np.full(tv.shape[0], np.nan)
    ok = np.isfinite(tv).any(axis=1)
    out[ok] = np.nanmean(tv[ok], axis=1)
    return out


def _resample(rng: np.random.Generator, n_draws: int, n_rows: int, size: int, p: np.ndarray | None = None):
    """(size, n_rows) counts of each row in ``size`` samples of ``n_draws`` rows drawn with replacement."""
    pvals = np.full(n_rows, 1.0 / n_rows) if p is None else p
    return rng.multinomial(n_draws, pvals, size=size).astype(float)


def _cell_bootstrap(rc, w, sc, ks, n_boot, rng, sw=None) -> tuple[np.ndarray, np.ndarray]:
    """Question-mean TV replicates: (observed resampled, perfect-simulator null), each of length n_boot.

    ``sw``: the agents' weights; the perfect simulator then draws as many agents as their Kish effective n.
    """
    n_r, n_s = rc.shape[0], sc.shape[0]
    sw = np.ones(n_s) if sw is None else sw
    n_perfect = max(1, int(round(kish_effective_n(sw)))) if sw.sum() > 0 else n_s
    h_r = [_onehot(rc[:, j], k) for j, k in enumerate(ks)]
    h_s = [_onehot(sc[:, j], k) for j, k in enumerate(ks)]
    obs, null = [], []
    chunk = max(1, _MAX_BOOT_CELLS // max(n_r, n_s))
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        real_rs = _resample(rng, n_r, n_r, b) * w
        synth_rs = _resample(rng, n_s, n_s, b) * sw
        perfect = _resample(rng, n_perfect, n_r, b, w / w.sum())
        obs.append(_qmean(np.stack([_tv_rows(_norm(real_rs @ hr), _norm(synth_rs @ hs))
                                    for hr, hs in zip(h_r, h_s)], axis=1)))
        null.append(_qmean(np.stack([_tv_rows(_norm(real_rs @ hr), _norm(perfect @ hr)) for hr in h_r], axis=1)))
    return np.concatenate(obs), np.concatenate(null)


def cell_fidelity(
    synth: pd.DataFrame,
    real: pd.DataFrame,
    options: Mapping[str, Sequence[Any]],
    attributes: Sequence[str],
    *,
    max_order: int = 2,
    min_n: int = 20,
    n_boot: int = 200,
    seed: int = 0,
    weights_col: str | None = "weight",
    persona_col: str | None = None,
) -> pd.DataFrame:
    """One row per cell: sizes, question-mean TV with bootstrap CI, JS, representativeness, noise floor.

    Columns: cell, attributes, order, real_n (respondents), real_eff_n (Kish), synth_n, n_questions,
    tv, tv_ci_low, tv_ci_high, js, representativeness, noise_floor_tv, excess_tv (tv - floor), suppressed,
    worse_than_floor; with ``persona_col`` also n_personas, top_persona, top_persona_share of the cell's
    synthetic agents. Means are over the questions answered in both tables. Cells with real_n < ``min_n``
    are suppressed: their figures are NaN. See the module docstring for the CI and noise-floor methods.
    """
    if n_boot < 2:
        raise DataError(f"`n_boot` must be at least 2; got {n_boot}")
    p = _prepare(synth, real, options, attributes, max_order, weights_col)
    if persona_col is not None and persona_col not in p.synth.columns:
        raise DataError(f"`persona_col` {persona_col!r} is not a column of the synthetic responses")
    ks = [len(p.options[q]) for q in p.questions]
    rows = []
    for i, cell in enumerate(p.cells):
        mr, ms = cell.mask(p.real), cell.mask(p.synth)
        w = p.weights[mr]
        per_q = pd.DataFrame(_point_rows(p, cell, 0, mr, ms))
        qmask = per_q["tv"].notna().to_numpy()
        row = {"cell": cell.name, "attributes": cell.attributes, "order": cell.order, "real_n": int(mr.sum()),
               "real_eff_n": kish_effective_n(w) if w.sum() > 0 else 0.0, "synth_n": int(ms.sum()),
               "n_questions": int(qmask.sum()), "suppressed": bool(mr.sum() < min_n)}
        for col in ("tv", "tv_ci_low", "tv_ci_high", "js", "representativeness", "noise_floor_tv"):
            row[col] = np.nan
        if not row["suppressed"] and qmask.any():
            row["tv"] = float(per_q.loc[qmask, "tv"].mean())
            row["js"] = float(per_q.loc[qmask, "js"].mean())
            row["representativeness"] = float(per_q.loc[qmask, "representativeness"].mean())
            rng = np.random.default_rng([seed, i])
            obs, null = _cell_bootstrap(p.real_codes[mr][:, qmask], w, p.synth_codes[ms][:, qmask],
                                        [k for k, ok in zip(ks, qmask) if ok], n_boot, rng, p.synth_weights[ms])
            low, high = row["tv"] + np.nanpercentile(obs - np.nanmean(obs), [2.5, 97.5])
            row["tv_ci_low"], row["tv_ci_high"] = float(np.clip(low, 0, 1)), float(np.clip(high, 0, 1))
            row["noise_floor_tv"] = float(np.nanmean(null))
        if persona_col is not None:
            counts = p.synth.loc[ms, persona_col].value_counts()
            row["n_personas"] = int(counts.size)
            row["top_persona"] = counts.index[0] if counts.size else None
            row["top_persona_share"] = float(counts.iloc[0] / counts.sum()) if counts.size else np.nan
        rows.append(row)
    out = pd.DataFrame(rows)
    out["excess_tv"] = out["tv"] - out["noise_floor_tv"]
    out["worse_than_floor"] = (out["tv_ci_low"] > out["noise_floor_tv"]).fillna(False).astype(bool)
    first = ["cell", "attributes", "order", "real_n", "real_eff_n", "synth_n", "n_questions", "tv", "tv_ci_low",
             "tv_ci_high", "js", "representativeness", "noise_floor_tv", "excess_tv", "suppressed", "worse_than_floor"]
    return out[first + [c for c in out.columns if c not in first]]


def noise_floor_curve(
    real: pd.DataFrame,
    options: Mapping[str, Sequence[Any]],
    sizes: Sequence[int],
    *,
    n_rep: int = 50,
    seed: int = 0,
    weights_col: str | None = "weight",
) -> pd.DataFrame:
    """Sampling-noise TV at each cell size n: a sample of n real respondents vs the full real distribution.

    Each of ``n_rep`` replicates draws n rows with replacement (i.i.d. from the empirical population),
    computes their weighted answer shares and the question-mean TV to the whole population's weighted
    shares. Returns columns n, tv (mean over replicates), tv_low, tv_high (2.5 / 97.5 percentiles).
    """
    opts = _check_options(options)
    questions = list(opts)
    r = _canonical(real, [], questions, "real")
    w, codes = column_weights(real, weights_col), _codes(r, questions, opts)
    full = [weighted_distribution(r[q].to_numpy(), opts[q], w) for q in questions]
    rng = np.random.default_rng(seed)
    rows = []
    for n in sizes:
        if int(n) < 1:
            raise DataError(f"`sizes` must be positive integers; got {n}")
        counts = _resample(rng, int(n), len(r), n_rep) * w
        tv = np.stack([_tv_rows(_norm(counts @ _onehot(codes[:, j], len(opts[q]))), full[j][None, :])
                       for j, q in enumerate(questions)], axis=1)
        reps = _qmean(tv)
        low, high = np.nanpercentile(reps, [2.5, 97.5])
        rows.append({"n": int(n), "tv": float(np.nanmean(reps)), "tv_low": float(low), "tv_high": float(high)})
    return pd.DataFrame(rows)


def split_half_noise_floor(
    real: pd.DataFrame,
    options: Mapping[str, Sequence[Any]],
    attributes: Sequence[str],
    *,
    max_order: int = 2,
    min_n: int = 20,
    n_rep: int = 50,
    seed: int = 0,
    weights_col: str | None = "weight",
) -> pd.DataFrame:
    """Real vs real: each cell's respondents split at random into two halves, question-mean TV between them.

    The direct, model-free answer to "how far apart are two real samples of this cell?": ``n_rep`` random
    halvings per cell (weights kept), mean and 2.5-97.5 percentiles of the TV. Each half has ~real_n/2
    respondents, so this floor sits about sqrt(2) above the size-matched ``noise_floor_tv`` of
    :func:`cell_fidelity` (real_n vs synth_n respondents); both shrink like 1/sqrt(n). Also ``group_vs_all_tv``:
    the TV between the cell's answers and all respondents' (how much this group differs from everyone; a
    simulation further than this from the group's answers did worse than assuming the group answers like
    everyone). Columns: cell, attributes, order, real_n, half_n, split_half_tv, split_half_low,
    split_half_high, group_vs_all_tv (NaN when suppressed).
    """
    if n_rep < 2:
        raise DataError(f"`n_rep` must be at least 2; got {n_rep}")
    opts = _check_options(options)
    questions = list(opts)
    r = _canonical(real, attributes, questions, "real")
    weights, codes = column_weights(real, weights_col), _codes(r, questions, opts)
    hot = [_onehot(codes[:, j], len(opts[q])) for j, q in enumerate(questions)]
    everyone = [_norm((weights @ h)[None, :]) for h in hot]
    rows = []
    for i, cell in enumerate(subgroup_cells(r, [f"attr_{_short(a)}" for a in attributes], max_order=max_order)):
        idx = np.flatnonzero(cell.mask(r))
        row = {"cell": cell.name, "attributes": cell.attributes, "order": cell.order, "real_n": len(idx),
               "half_n": len(idx) // 2, "split_half_tv": np.nan, "split_half_low": np.nan, "split_half_high": np.nan,
               "group_vs_all_tv": np.nan}
        if len(idx) >= max(min_n, 2):
            group = [_tv_rows(_norm((weights[idx] @ h[idx])[None, :]), e) for h, e in zip(hot, everyone, strict=True)]
            row["group_vs_all_tv"] = float(_qmean(np.stack(group, axis=1))[0])
            rng = np.random.default_rng([seed, i])
            half = np.zeros((n_rep, len(idx)))
            for b in range(n_rep):
                half[b, rng.permutation(len(idx))[: len(idx) // 2]] = 1.0
            wa, wb = half * weights[idx], (1.0 - half) * weights[idx]
            reps = _qmean(np.stack([_tv_rows(_norm(wa @ h[idx]), _norm(wb @ h[idx])) for h in hot], axis=1))
            row["split_half_tv"] = float(np.nanmean(reps))
            row["split_half_low"], row["split_half_high"] = (float(v) for v in np.nanpercentile(reps, [2.5, 97.5]))
        rows.append(row)
    return pd.DataFrame(rows)
