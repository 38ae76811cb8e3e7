"""Real answers under a questionnaire's rules: multi_select option columns and skip logic on the data.

A multi_select question's data is one column per option, coded 0/1 (or yes/no, true/false), or holding the
option's text when chosen and nothing when not (as survey tools export "select all that apply"). A cell that is
empty, 0, "No" or "False" (any case) is not chosen, any other value is chosen; missing rules turn a cell empty.
A respondent whose cells for the question are all empty gave no answer to it (a skipped question and a
"none of these" in a text/empty export read the same; 0/1 exports keep "none of these" as all "No").

Skip logic: a respondent who does not meet a question's ``ask_if`` (on the data's own attributes and answers)
was not asked it, so any answer recorded there is dropped, and shares and MoP fitting count only those asked.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from popsim.exceptions import DataError
from popsim.questions import NO, YES, QuestionSpec, SkipLogic, expand_items, item_id
from popsim.survey_files import remove_missing

__all__ = ["multi_select_answers", "ranking_answers", "apply_skip_logic", "scored_items", "add_ranks", "NOT_CHOSEN"]

NOT_CHOSEN = frozenset({"0", "no", "false", "not chosen", "not selected"})
"""Cell values (lower case) that mean an option was not chosen, besides an empty cell."""


def multi_select_answers(frame: pd.DataFrame, question: QuestionSpec, rules: list,
                         value_labels: dict[str, dict[str, str]]) -> tuple[dict[str, pd.Series], dict[str, int]]:
    """Yes/No answers per item of a multi_select ``question`` (item id -> series; NaN = no answer) and the
    answers each missing rule removed."""
    items = {item.column: item.id for item in expand_items([question])}
    cells: dict[str, pd.Series] = {}
    removed: dict[str, int] = {}
    for column in items:
        values, counts = remove_missing(_column(frame, question, column), rules, value_labels.get(str(column)))
        for rule, n in counts.items():
            removed[rule] = removed.get(rule, 0) + n
        cells[column] = values.map(_chosen)
    table = pd.DataFrame(cells)
    if table.isna().all().all():
        raise DataError(f"question '{question.id}': its `columns` are all empty (nobody chose any option); check "
                        "the column names")
    answered = table.notna().any(axis=1)
    out = {}
    for column, item in items.items():
        out[item] = pd.Series(np.where(table[column].fillna(False).astype(bool), YES, NO), index=frame.index,
                              dtype=object).where(answered, None)
    return out, removed


def ranking_answers(frame: pd.DataFrame, question: QuestionSpec, rules: list,
                    value_labels: dict[str, dict[str, str]]) -> tuple[dict[str, pd.Series], dict[str, int]]:
    """Position answers ``q[#n]`` (the option ranked n-th, n < k) of a ranking ``question`` whose data holds one
    rank column per option, and the answers each missing rule removed. A respondent whose ranks are not 1..k
    (or 1..k-1 with one option left unranked), each once, gave no answer: ties and gaps are counted under
    "invalid ranking (ties or gaps)"."""
    columns = question.option_columns()
    table, removed = {}, {}
    for option, column in columns.items():
        values = _column(frame, question, column)
        values, counts = remove_missing(values, rules, value_labels.get(str(column)))
        for rule, n in counts.items():
            removed[rule] = removed.get(rule, 0) + n
        table[option] = pd.to_numeric(values, errors="coerce")
    ranks = pd.DataFrame(table)
    k = len(question.option_labels)
    positions = {item_id(question.id, f"#{n}"): [None] * len(frame) for n in range(1, k)}
    invalid = 0
    for i, row in enumerate(ranks.itertuples(index=False)):
        given = {o: r for o, r in zip(ranks.columns, row, strict=True) if pd.notna(r)}
        if not given:
            continue
        order = sorted(given, key=given.get)
        if sorted(given.values()) != list(range(1, len(given) + 1)) or len(given) < k - 1:
            invalid += 1
            continue
        for n, option in enumerate(order[: k - 1], 1):
            positions[item_id(question.id, f"#{n}")][i] = option
    if invalid:
        removed["invalid ranking (ties or gaps)"] = invalid
    return {item: pd.Series(v, index=frame.index, dtype=object) for item, v in positions.items()}, removed


def _column(frame: pd.DataFrame, question: QuestionSpec, column: str) -> pd.Series:
    if column not in frame.columns:
        import difflib

        close = difflib.get_close_matches(str(column), [str(c) for c in frame.columns], n=1)
        hint = f"did you mean '{close[0]}'?" if close else "check the column names of the data"
        raise DataError(f"`questions[{question.id}].columns` names column '{column}', which is not in the data; "
                        f"{hint}")
    return frame[column]


def _chosen(value: object) -> bool | None:
    if value is None or (isinstance(value, float) and np.isnan(value)) or pd.isna(value):
        return None
    text = str(value).strip()
    if not text:
        return None
    try:
        return float(text) != 0
    except ValueError:
        return text.lower() not in NOT_CHOSEN


def apply_skip_logic(respondents: pd.DataFrame, items: list[QuestionSpec]) -> pd.DataFrame:
    """Drop answers of respondents who did not meet the item's ``ask_if`` (columns ``q_<item>``, ``attr_*``)."""
    logic = SkipLogic(items)
    if not logic.conditional:
        return respondents
    out = respondents.copy()
    columns = [f"q_{q.id}" for q in items]
    for index, row in out.iterrows():
        answers: dict[str, str | None] = {}
        profile = {c: row[c] for c in out.columns if c.startswith("attr_")}
        for q, col in zip(items, columns, strict=True):
            value = row[col] if col in out.columns else None
            value = None if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)
            if value is not None and logic.asked(q, answers, profile) is False:
                out.at[index, col] = None
                value = None
            answers[q.id] = value
    return out


def scored_items(questions: Sequence[QuestionSpec]) -> list[QuestionSpec]:
    """The items evaluation scores: the asked items, but a ranking as one item per option, ``q[option]``,
    whose answer is the rank it got ("1" = first; :func:`add_ranks` derives them from the positions)."""
    out = []
    for q in questions:
        if q.type != "ranking":
            out += expand_items([q])
            continue
        ranks = [str(r) for r in range(1, len(q.option_labels) + 1)]
        out += [QuestionSpec(id=item_id(q.id, o), text=f"{q.text.strip()} Rank of \"{o}\"", options=ranks)
                for o in q.option_labels]
    return out


def add_ranks(wide: pd.DataFrame, questions: Sequence[QuestionSpec]) -> pd.DataFrame:
    """``wide`` (one row per respondent or agent, item columns) with each ranking's ``q[option]`` rank columns
    filled from its position columns ``q[#n]`` (the option left after k - 1 positions is ranked last)."""
    out = wide.copy()
    for q in questions:
        if q.type != "ranking":
            continue
        k = len(q.option_labels)
        positions = [item_id(q.id, f"#{n}") for n in range(1, k)]
        ranks = {o: [None] * len(out) for o in q.option_labels}
        for i, row in enumerate(out[positions].itertuples(index=False) if set(positions) <= set(out.columns)
                                else []):
            chosen = [v for v in row if isinstance(v, str)]
            if len(chosen) != k - 1 or len(set(chosen)) != k - 1:
                continue
            for n, option in enumerate(chosen, 1):
                ranks[option][i] = str(n)
            last = next(o for o in q.option_labels if o not in chosen)
            ranks[last][i] = str(k)
        for option, values in ranks.items():
            out[item_id(q.id, option)] = pd.Series(values, index=out.index, dtype=object)
    return out
