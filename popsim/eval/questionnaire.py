"""The report's questionnaire section: skip logic, select-all-that-apply options, missing rules, rankings, scales.

Per-question panels already compare every item's answer shares; this section reads the questionnaire as its
designer would: who was asked each conditional question (real respondents with an answer vs simulated agents
asked), the shares over those asked, the share choosing each option of a multi_select question (each option a
yes/no distribution: its TV is the absolute gap), the shares of questions with missing rules (over the answers
left), each ranked option's mean rank, and the mean score of each scale (points numbered 1..k low to high,
or the points' own numbers).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from popsim.eval.metrics import column_weights
from popsim.eval.page import Section, Table
from popsim.questions import NO, YES, QuestionSpec, expand_items, item_parent

__all__ = ["questionnaire_section"]


def _pct(v: float) -> str:
    return f"{100 * v:.0f}%" if np.isfinite(v) else "–"


def _shares(frame: pd.DataFrame, column: str, options: Sequence[str], weights: np.ndarray) -> tuple[np.ndarray, float]:
    """Weighted shares of ``options`` among rows answering one of them, and the weight of those rows."""
    if column not in frame.columns:
        return np.full(len(options), np.nan), 0.0
    values = frame[column].astype(object).to_numpy()
    ok = np.isin(values, list(options)) & (weights > 0)
    total = weights[ok].sum()
    if total <= 0:
        return np.full(len(options), np.nan), 0.0
    return np.array([weights[ok & (values == o)].sum() / total for o in options]), float(ok.sum())


def _answered(frame: pd.DataFrame, question: QuestionSpec) -> int:
    """Respondents or agents with an answer to the question (any item of a multi_select one)."""
    cols = [c for c in (i.id for i in expand_items([question])) if c in frame.columns]
    if not cols:
        return 0
    return int(frame[cols].notna().any(axis=1).sum())


def questionnaire_section(questions: Sequence[QuestionSpec], runs: Mapping[str, pd.DataFrame], real: pd.DataFrame,
                          *, weights_col: str | None = "weight") -> Section | None:
    """The section, or None when the questionnaire has no ask_if, multi_select, missing rule or scale.

    ``runs``: method -> wide agent table (one row per agent, item columns); ``real``: the wide held-out table.
    """
    conditional = [q for q in questions if q.ask_if is not None]
    multi = [q for q in questions if q.type == "multi_select"]
    with_missing = [q for q in questions if q.missing and q.type != "multi_select"]
    scales = [q for q in questions if q.type == "scale"]
    if not (conditional or multi or with_missing or scales or any(q.type == "ranking" for q in questions)):
        return None
    w_real = column_weights(real, weights_col)
    labels = {q.id: q.code_to_label for q in questions}
    blocks: list = ["How the questionnaire's own rules came out: real held-out respondents (by their weights) "
                    "beside the simulated agents. A conditional question is compared over those asked: real "
                    "respondents who met its condition and answered, agents whose own earlier answers met it."]
    if conditional:
        rows = []
        for q in conditional:
            row = {"Question": q.id, "Asked if": q.ask_if.describe(labels),
                   "Real: answered": f"{_answered(real, q)} of {len(real)} ({_pct(_answered(real, q) / len(real))})"}
            for m, f in runs.items():
                n = _answered(f, q)
                row[f"{m}: asked"] = f"{n} of {len(f)} ({_pct(n / len(f) if len(f) else np.nan)})"
            rows.append(row)
        blocks.append(Table(pd.DataFrame(rows), caption="Skip logic: who was asked", collapse=False))
    shown = {q.id for q in conditional + with_missing}
    single = [q for q in questions if q.id in shown and q.type in ("single", "scale") and not q.free_text]
    if single:
        rows = []
        for q in single:
            p, n = _shares(real, q.id, q.option_labels, w_real)
            sims = {m: _shares(f, q.id, q.option_labels, np.ones(len(f))) for m, f in runs.items()}
            note = "; ".join(x for x in (q.ask_if and f"asked if {q.ask_if.describe(labels)}",
                                         q.missing and "missing: " + ", ".join(map(str, q.missing))) if x)
            for k, o in enumerate(q.option_labels):
                row = {"Question": f"{q.id} ({note}; {n:.0f} real answers)" if k == 0 else "", "Option": o,
                       "Real share": _pct(p[k])}
                row.update({f"{m} share": _pct(s[0][k]) for m, s in sims.items()})
                rows.append(row)
        blocks.append(Table(pd.DataFrame(rows), caption="Shares over those asked (conditional questions and "
                            "questions with missing rules)", collapse=False))
    if multi:
        rows = []
        for q in multi:
            for item in expand_items([q]):
                _, option = item_parent(item.id)
                real_p = _choosing(real, item.id, w_real)
                row = {"Question": q.id, "Option": option, "Real: share choosing": _pct(real_p)}
                for m, f in runs.items():
                    sim_p = _choosing(f, item.id, np.ones(len(f)))
                    row[f"{m}: share choosing"] = _pct(sim_p)
                    row[f"{m}: gap (points)"] = f"{100 * (sim_p - real_p):+.0f}" if np.isfinite(sim_p - real_p) \
                        else "–"
                rows.append(row)
        blocks.append(Table(pd.DataFrame(rows), caption="Select all that apply: share choosing each option, among "
                            "those who answered (the gap is also the option's TV as a yes/no distribution)",
                            collapse=False))
    rankings = [q for q in questions if q.type == "ranking"]
    if rankings:
        rows = []
        for q in rankings:
            ranks = [str(r) for r in range(1, len(q.option_labels) + 1)]
            points = np.arange(1, len(ranks) + 1, dtype=float)
            for option in q.option_labels:
                col = f"{q.id}[{option}]"
                row = {"Question": q.id, "Option": option,
                       "Real mean rank": _mean(_shares(real, col, ranks, w_real)[0], points)}
                for m, f in runs.items():
                    row[f"{m} mean rank"] = _mean(_shares(f, col, ranks, np.ones(len(f)))[0], points)
                rows.append(row)
        blocks.append(Table(pd.DataFrame(rows), caption="Rankings: mean rank of each option (1 = first), among "
                            "those who ranked", collapse=False))
    if scales:
        rows = []
        for q in scales:
            points = _points(q)
            p, _ = _shares(real, q.id, q.option_labels, w_real)
            row = {"Question": q.id, "Scale": f"{q.option_labels[0]} ({points[0]:g}) to {q.option_labels[-1]} "
                   f"({points[-1]:g})", "Real mean": _mean(p, points)}
            for m, f in runs.items():
                row[f"{m} mean"] = _mean(_shares(f, q.id, q.option_labels, np.ones(len(f)))[0], points)
            rows.append(row)
        blocks.append(Table(pd.DataFrame(rows), caption="Scales: mean score over those who answered",
                            collapse=False))
    return Section("questionnaire", "Questionnaire: skip logic, select all that apply, missing rules, rankings, "
                   "scales",
                   blocks)


def _choosing(frame: pd.DataFrame, item: str, weights: np.ndarray) -> float:
    p, _ = _shares(frame, item, [YES, NO], weights)
    return float(p[0])


def _points(q: QuestionSpec) -> np.ndarray:
    """A scale's point values: its option codes or wordings when all are numbers, else 1..k."""
    for values in (list(q.code_to_label), q.option_labels):
        try:
            return np.array([float(v) for v in values])
        except ValueError:
            continue
    return np.arange(1, len(q.option_labels) + 1, dtype=float)


def _mean(p: np.ndarray, points: np.ndarray) -> str:
    return f"{float(np.dot(p, points)):.2f}" if np.isfinite(p).all() else "–"
