"""Statistical survey files and missing-value rules.

SPSS (``.sav``, ``.zsav``, ``.por``), Stata (``.dta``) and SAS (``.sas7bdat``, ``.xpt``) files are read with
``pyreadstat``, keeping what the survey's designers wrote into them: variable labels (the question wording)
and value labels (the wording of each answer code). Codes a file declares as user-missing stay codes: only
the scenario's ``missing`` rules make an answer missing, so nothing vanishes without the scenario saying so.

The scenario loader calls :func:`fill_from_labels` on the raw YAML before validation, so a question on a
labelled file may leave out ``text`` (taken from the variable label) and ``options`` (taken from the value
labels, less the codes its ``missing`` rules name); the completed questions are what the run records.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from popsim.config import _code
from popsim.exceptions import DataError, first_line

__all__ = ["LABELLED_SUFFIXES", "FileLabels", "read_labelled", "fill_from_labels", "missing_for",
           "remove_missing", "rule_name"]

LABELLED_SUFFIXES = {".sav": "SPSS", ".zsav": "SPSS", ".por": "SPSS", ".dta": "Stata", ".sas7bdat": "SAS",
                     ".xpt": "SAS"}


@dataclass(frozen=True)
class FileLabels:
    """Per column: the variable label (question wording) and value labels (answer code -> wording)."""

    columns: tuple[str, ...] = ()
    questions: dict[str, str] = field(default_factory=dict)
    options: dict[str, dict[str, str]] = field(default_factory=dict)


def read_labelled(path: Path, *, metadata_only: bool = False) -> tuple[pd.DataFrame, FileLabels]:
    """Read an SPSS/Stata/SAS file with its labels; user-missing codes are kept as codes, blank text is missing."""
    import pyreadstat

    suffix = path.suffix.lower()
    reader = {".sav": pyreadstat.read_sav, ".zsav": pyreadstat.read_sav, ".por": pyreadstat.read_por,
              ".dta": pyreadstat.read_dta, ".sas7bdat": pyreadstat.read_sas7bdat, ".xpt": pyreadstat.read_xport}[suffix]
    kwargs: dict[str, Any] = {"metadataonly": metadata_only}
    if suffix in {".sav", ".zsav", ".dta", ".sas7bdat"}:
        kwargs["user_missing"] = True
    try:
        frame, meta = reader(str(path), **kwargs)
    except Exception as exc:
        kind = LABELLED_SUFFIXES[suffix]
        raise DataError(f"data file {path} is not a readable {kind} file ({first_line(exc, 120)}); re-export it from "
                        f"{kind}, or save it as CSV and point data.source at that") from None
    for column in frame.columns:
        if frame[column].dtype == object or pd.api.types.is_string_dtype(frame[column]):
            blank = frame[column].map(lambda v: isinstance(v, str) and not v.strip())
            frame[column] = frame[column].mask(blank)
    labels = FileLabels(
        tuple(str(c) for c in meta.column_names),
        {str(c): str(t) for c, t in (meta.column_names_to_labels or {}).items() if t and str(t).strip()},
        {str(c): {_code(k): str(v) for k, v in codes.items()}
         for c, codes in (meta.variable_value_labels or {}).items()})
    return frame, labels


def missing_for(question: dict | Any, global_missing: list | None) -> list:
    """The missing rules of one question: its own ``missing`` list when given (it replaces ``data.missing``),
    else ``data.missing``."""
    own = question.get("missing") if isinstance(question, dict) else getattr(question, "missing", None)
    return list(own) if own is not None else list(global_missing or [])


def fill_from_labels(raw: dict) -> dict:
    """Complete survey questions on a labelled file: ``text`` from the variable label, ``options`` from the
    value labels (file order, less the codes and wordings named missing). Returns ``raw`` unchanged when
    nothing is left out or the source is not a statistical file; malformed YAML is left to the schema."""
    data, questions = raw.get("data"), raw.get("questions")
    if not isinstance(data, dict) or not isinstance(data.get("source"), str) or not isinstance(questions, list):
        return raw
    path = Path(data["source"])
    if path.suffix.lower() not in LABELLED_SUFFIXES:
        return raw
    todo = [i for i, q in enumerate(questions) if isinstance(q, dict) and isinstance(q.get("column"), str)
            and not q.get("free_text") and (q.get("options") is None or q.get("text") is None)]
    if not todo:
        return raw
    if not path.is_absolute():
        path = Path(raw.get("base_dir", ".")) / path
    if not path.is_file():
        raise DataError(f"data file {path} does not exist; fix data.source (relative to the scenario file)")
    _, labels = read_labelled(path, metadata_only=True)
    global_missing = data.get("missing") if isinstance(data.get("missing"), list) else None
    questions = list(questions)
    for i in todo:
        q = dict(questions[i])
        column = q["column"]
        if column not in labels.columns:
            close = difflib.get_close_matches(column, labels.columns, n=1)
            hint = f"did you mean '{close[0]}'?" if close else "check the variable names in the file"
            raise DataError(f"`questions[{q.get('id')}].column` names column '{column}', which is not in "
                            f"{path.name}; {hint}")
        if q.get("text") is None and column in labels.questions:
            q["text"] = labels.questions[column]
        if q.get("options") is None and labels.options.get(column):
            rules = {_code(m) for m in missing_for(q, global_missing)}
            q["options"] = {code: wording for code, wording in labels.options[column].items()
                            if code not in rules and wording not in rules}
        questions[i] = q
    return {**raw, "questions": questions}


def rule_name(rule: Any) -> str:
    """How a missing rule reads in messages: 8, 'Don't know'."""
    return _code(rule) if isinstance(rule, int | float) else f"'{rule}'"


def remove_missing(values: pd.Series, rules: list, value_labels: dict[str, str] | None = None
                   ) -> tuple[pd.Series, dict[str, int]]:
    """Answers matching a rule (by code, or by the file's value label of the code) become missing.

    Returns the answers and, per rule (as :func:`rule_name` writes it), how many answers it removed; an
    answer matching two rules counts for the first."""
    if not rules:
        return values, {}
    value_labels = value_labels or {}
    wanted = [_code(r) for r in rules]
    codes = values.map(lambda v: None if pd.isna(v) else _code(v))
    hit = codes.map(lambda c: None if c is None else next(
        (i for i, w in enumerate(wanted) if c == w or value_labels.get(c) == w), None))
    counts = {rule_name(r): int((hit == i).sum()) for i, r in enumerate(rules)}
    return values.mask(hit.notna()), counts
