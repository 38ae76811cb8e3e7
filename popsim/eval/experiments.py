"""Survey experiments: each arm's answer shares, the average treatment effect and per-subgroup effects.

:func:`experiment_effects` works on a run's ``responses.parquet`` (or its one-row-per-agent table), usable
from a notebook; :func:`experiment_section` turns its result into the report's section.

Effects are measured against the control arm, on two scales per question:

* ``mean``: the difference in the mean option position, options scored 0, 1, ..., k-1 in the order the
  scenario lists them (for the GSS spending items: too little = 0, about right = 1, too much = 2; positive
  means the arm leans towards the later options). Arms that show the options in another order are scored
  by the same wordings, so the scale is the same in every arm.
* ``share: <option>``: the difference in the share choosing that option (0-1).

Shares and means honour the agents' ``weight`` column. Intervals are seeded percentile bootstraps
(2.5-97.5) that resample agents with replacement within each arm (and group); an effect is flagged too wide
to read when its interval is wider than ``max_width`` of its scale's range (k-1 for means, 1 for shares)
or when an arm has fewer than two agents in the group.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from popsim.eval.metrics import column_weights
from popsim.eval.page import Section, Table
from popsim.eval.subgroups import _as_labels, _attr_column, respondent_table
from popsim.exceptions import DataError

__all__ = ["ExperimentResult", "experiment_effects", "experiment_section", "MAX_WIDTH"]

MAX_WIDTH = 0.4
"""An effect whose 95% interval spans more than this share of its scale's range is too wide to read."""


@dataclass
class ExperimentResult:
    """``shares``: arm, question, option, share, n, eff_n. ``effects``: question, arm, control, group, measure,
    effect, ci_low, ci_high, n_arm, n_control, too_wide."""

    shares: pd.DataFrame
    effects: pd.DataFrame
    control: str
    arms: list[str]


def _boot_effects(score_a, w_a, score_c, w_c, n_boot, rng) -> np.ndarray:
    """(n_boot, m) replicate effects: weighted column means of ``score_a`` minus those of ``score_c``."""
    def means(score, w):
        idx = rng.integers(0, len(w), size=(n_boot, len(w)))
        ww = w[idx]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.einsum("bn,bnm->bm", ww, score[idx]) / ww.sum(axis=1, keepdims=True)
    return means(score_a, w_a) - means(score_c, w_c)


def _mean(score: np.ndarray, w: np.ndarray) -> np.ndarray:
    return (w[:, None] * score).sum(axis=0) / w.sum()


def experiment_effects(
    responses: pd.DataFrame,
    options: Mapping[str, Sequence[Any]],
    *,
    control: str | None = None,
    by: Sequence[str] = (),
    arm_col: str = "arm",
    weights_col: str | None = "weight",
    n_boot: int = 1000,
    seed: int = 0,
    max_width: float = MAX_WIDTH,
) -> ExperimentResult:
    """Arms' answer shares and effects against ``control`` (default: the first arm in order of appearance).

    ``responses``: a run's long responses (last round is used) or its one-row-per-agent table, with an
    ``arm`` column; ``options``: {question: option wordings in scale order}; ``by``: attributes whose groups
    get their own effects beside "all".
    """
    if n_boot < 2:
        raise DataError(f"`n_boot` must be at least 2; got {n_boot}")
    table = respondent_table(responses)
    if arm_col not in table.columns:
        raise DataError(f"the responses have no `{arm_col}` column; run a scenario with `experiments`")
    arms = list(dict.fromkeys(table[arm_col].astype(str)))
    control = arms[0] if control is None else control
    if control not in arms or len(arms) < 2:
        raise DataError(f"control arm {control!r} and at least one other arm must be in the responses; "
                        f"arms found: {arms}")
    arm = table[arm_col].astype(str).to_numpy()
    w = column_weights(table, weights_col)
    groups: list[tuple[str, np.ndarray]] = [("all", np.ones(len(table), bool))]
    for name in by:
        labels = _as_labels(table[_attr_column(table, name)])
        for value in sorted(labels.dropna().unique()):
            groups.append((f"{name.removeprefix('attr_')}={value}", (labels == value).to_numpy()))
    rng = np.random.default_rng(seed)
    share_rows, effect_rows = [], []
    for question, opts in options.items():
        opts = [str(o) for o in opts]
        if question not in table.columns:
            raise DataError(f"question `{question}` is in `options` but not in the responses; drop it")
        answers = _as_labels(table[question]).to_numpy()
        code = np.array([opts.index(a) if a in opts else -1 for a in answers])
        answered = code >= 0
        # columns: mean position, then one indicator per option
        score = np.column_stack([np.clip(code, 0, None)] + [(code == k).astype(float) for k in range(len(opts))])
        measures = ["mean"] + [f"share: {o}" for o in opts]
        ranges = np.array([max(len(opts) - 1, 1)] + [1.0] * len(opts))
        for a in arms:
            m = answered & (arm == a)
            shares = _mean(score[m, 1:], w[m]) if w[m].sum() > 0 else np.full(len(opts), np.nan)
            eff = float(w[m].sum() ** 2 / (w[m] ** 2).sum()) if w[m].sum() > 0 else 0.0
            share_rows += [dict(arm=a, question=question, option=o, share=shares[k], n=int(m.sum()), eff_n=eff)
                           for k, o in enumerate(opts)]
        for group, in_group in groups:
            mc = answered & in_group & (arm == control)
            for a in arms:
                if a == control:
                    continue
                ma = answered & in_group & (arm == a)
                row = dict(question=question, arm=a, control=control, group=group, n_arm=int(ma.sum()),
                           n_control=int(mc.sum()))
                if min(w[ma].sum(), w[mc].sum()) <= 0:
                    effect = low = high = np.full(len(measures), np.nan)
                else:
                    effect = _mean(score[ma], w[ma]) - _mean(score[mc], w[mc])
                    reps = _boot_effects(score[ma], w[ma], score[mc], w[mc], n_boot, rng)
                    low, high = np.nanpercentile(reps, [2.5, 97.5], axis=0)
                for k, measure in enumerate(measures):
                    wide = bool(not np.isfinite(low[k]) or min(ma.sum(), mc.sum()) < 2
                                or high[k] - low[k] > max_width * ranges[k])
                    effect_rows.append(dict(row, measure=measure, effect=effect[k], ci_low=low[k], ci_high=high[k],
                                            too_wide=wide))
    effects = pd.DataFrame(effect_rows)
    first = ["question", "arm", "control", "group", "measure", "effect", "ci_low", "ci_high", "n_arm", "n_control",
             "too_wide"]
    return ExperimentResult(pd.DataFrame(share_rows), effects[first] if len(effects) else effects, control, arms)


def _pp(v: float) -> str:
    return f"{100 * v:+.0f} pts" if np.isfinite(v) else "–"


def _effect_text(row: pd.Series) -> tuple[str, str]:
    if row["measure"] == "mean":
        fmt = (lambda v: f"{v:+.2f}" if np.isfinite(v) else "–")  # noqa: E731
    else:
        fmt = _pp
    return fmt(row["effect"]), f"{fmt(row['ci_low'])} to {fmt(row['ci_high'])}"


def experiment_section(result: ExperimentResult, *, wording: Mapping[str, str] | None = None,
                       description: Sequence[str] = ()) -> Section:
    """The report's experiment section: arms' shares, average effects and subgroup effects with intervals."""
    wording = dict(wording or {})
    shares = result.shares
    wide = shares.pivot_table(index=["question", "option"], columns="arm", values="share", sort=False)
    share_rows = []
    for (q, o), row in wide.iterrows():
        entry = {"Question": q, "Option": o}
        entry.update({f"Share, {a} (%)": f"{100 * row[a]:.0f}" if np.isfinite(row[a]) else "–" for a in result.arms})
        share_rows.append(entry)
    sizes = shares.groupby("arm", sort=False)["n"].max()
    eff = result.effects

    def table(rows: pd.DataFrame) -> pd.DataFrame:
        out = []
        for _, r in rows.iterrows():
            value, interval = _effect_text(r)
            out.append({"Question": r["question"], "Arm vs control": f"{r['arm']} vs {r['control']}",
                        "Group": r["group"], "Measure": r["measure"], "Effect": value, "95% interval": interval,
                        "Agents (arm / control)": f"{r['n_arm']} / {r['n_control']}",
                        "Readable?": "too wide to read" if r["too_wide"] else "yes"})
        return pd.DataFrame(out)

    overall = eff[eff["group"] == "all"]
    groups = eff[(eff["group"] != "all") & (eff["measure"] == "mean")]
    n_wide = int(groups["too_wide"].sum())
    blocks: list = [
        f"Arms (agents): {', '.join(f'{a} ({int(sizes[a])})' for a in result.arms)}; effects are measured "
        f"against {result.control}. Mean: difference in the mean option position (options scored 0, 1, ... in "
        "the scenario's order; positive leans to the later options). Shares: difference in percentage points. "
        f"95% intervals: percentile bootstrap over agents within each arm; flagged too wide to read when wider "
        f"than {MAX_WIDTH:.0%} of the scale's range.",
        *description,
        Table(pd.DataFrame(share_rows), caption="Answer shares per arm", collapse=False),
        Table(table(overall), caption="Average treatment effects (all agents)", collapse=False),
    ]
    if len(groups):
        blocks.append(f"Subgroup effects on the mean: {len(groups) - n_wide} readable, {n_wide} too wide to read.")
        blocks.append(Table(table(groups), caption="Effects by subgroup (mean position)", collapse=True))
    questions = ", ".join(f"{q}: {wording[q]}" for q in dict.fromkeys(eff["question"]) if q in wording)
    if questions:
        blocks.append(f"Questions (control wording): {questions}")
    return Section("experiment", "Survey experiment", blocks)
