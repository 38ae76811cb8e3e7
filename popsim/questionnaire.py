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

import numpy as np
import pandas as pd

from popsim.exceptions import DataError
from popsim.questions import NO, YES, QuestionSpec, SkipLogic, expand_items
from popsim.survey_files import remove_missing

__all__ = ["multi_select_answers", "apply_skip_logic", "NOT_CHOSEN"]

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
        if column not in frame.columns:
            import difflib

            close = difflib.get_close_matches(str(column), [str(c) for c in frame.columns], n=1)
            hint = f"did you mean '{close[0]}'?" if close else "check the column names of the data"
            raise DataError(f"`questions[{question.id}].columns` names column '{column}', which is not in the data; "
                            f"{hint}")
        values, counts = remove_missing(frame[column], rules, value_labels.get(str(column)))
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
