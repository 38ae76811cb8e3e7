"""``popsim init DATA_FILE``: draft a starting scenario YAML from a data file.

Columns are sorted into an id column, a weight, respondent attributes and multiple-choice questions (the
rest is listed as skipped). On an SPSS/Stata/SAS file the variable labels become the question wording and
the value labels the option wording; answers labelled "don't know" / "refused" become ``data.missing``
rules. A skip pattern (a question empty exactly when an earlier one has certain answers) becomes the
question's ``ask_if``, with a comment to check it.
The draft validates and runs as written; its comments say what to check before trusting the results.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from popsim.config import _code
from popsim.exceptions import PopsimError

__all__ = ["draft_scenario", "init_command"]

MAX_OPTIONS = 12
ID_NAMES = re.compile(r"^(id|respid|resp_?id|caseid|case_?id|respondent(_?id)?|serial|pid_?resp)$|(^|_)id$", re.I)
WEIGHT_NAMES = re.compile(r"weight|(^|_)wt|wt($|_|\d)", re.I)
ATTRIBUTE_EXACT = {"age", "sex", "race", "agegrp", "agegroup", "educ", "edu", "inc", "party", "pid", "region"}
ATTRIBUTE_PREFIX = ("gender", "educ", "degree", "ethnic", "income", "region", "party", "marital", "relig", "race")
ATTRIBUTE_LABEL = re.compile(r"\b(age|sex|gender|education|degree|race|ethnicity|income|region|party|marital|"
                             r"religion)\b", re.I)
NO_ANSWER = re.compile(r"don.?t know|\bdk\b|refus|no answer|prefer not", re.I)
MISSING_CODES = (8, 9, 98, 99, -1, -8, -9)


@dataclass
class Draft:
    """What :func:`draft_scenario` decided, column by column."""

    id_column: str | None = None
    weight: str | None = None
    attributes: dict[str, dict] = field(default_factory=dict)
    questions: list[dict] = field(default_factory=list)
    notes: dict[str, list[str]] = field(default_factory=dict)  # question id -> comment lines above it
    skipped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    maybe_missing: list[int] = field(default_factory=list)


def _codes(values: pd.Series) -> pd.Series:
    return values.map(lambda v: None if pd.isna(v) else _code(v))


def _numeric(values: pd.Series) -> pd.Series | None:
    if pd.api.types.is_bool_dtype(values):
        return None
    out = pd.to_numeric(values, errors="coerce")
    return out if out.notna().sum() == values.notna().sum() else None


def _key(code: str) -> int | float | str:
    """Codes as YAML writes them most readably: 1 rather than '1'."""
    try:
        number = float(code)
    except ValueError:
        return code
    return int(number) if number.is_integer() and re.fullmatch(r"-?\d+", code) else code


def _is_attribute(name: str, label: str | None) -> bool:
    tokens = [t for t in re.split(r"[^a-z]+", name.lower()) if t]
    if any(t in ATTRIBUTE_EXACT or t.startswith(ATTRIBUTE_PREFIX) for t in tokens):
        return True
    return bool(label and len(label.split()) <= 5 and ATTRIBUTE_LABEL.search(label))


def _bins(name: str, numbers: pd.Series) -> tuple[list[float], list[str]] | None:
    lo, hi = math.floor(numbers.min()), math.ceil(numbers.max())
    if "age" in name.lower():
        inner = [e for e in (29, 44, 64) if lo < e < hi]
    else:
        inner = sorted({round(float(q), 6) for q in numbers.quantile([1 / 3, 2 / 3])} - {lo, hi})
        inner = [e for e in inner if lo < e < hi]
    edges = [lo, *inner, hi]
    if len(edges) < 2 or edges[0] >= edges[-1]:
        return None
    integral = all(float(e).is_integer() for e in edges) and (numbers % 1 == 0).all()
    labels = [f"{a:g}-{b:g}" if i == 0 or not integral else f"{a + 1:g}-{b:g}"
              for i, (a, b) in enumerate(zip(edges[:-1], edges[1:], strict=True))]
    return [float(e) if not float(e).is_integer() else int(e) for e in edges], labels


def _options(values: pd.Series, value_labels: dict[str, str], missing: set[str]) -> tuple[dict | list, list[str]]:
    """A question's options ({code: wording} or a list of texts) and any codes left without a wording."""
    seen = list(dict.fromkeys(_codes(values).dropna()))
    if value_labels:
        options = {code: text for code, text in value_labels.items() if text not in missing}
        unlabelled = [c for c in seen if c not in value_labels]
        options.update({c: c for c in unlabelled})
        return {_key(c): t for c, t in options.items()}, unlabelled
    if _numeric(values) is not None:
        ordered = sorted(seen, key=float)
        return {_key(c): c for c in ordered}, ordered
    return [c for c in seen if c not in missing], []


def _skip_pattern(q: pd.Series, others: list[tuple[str, pd.Series, dict[str, str]]]) -> tuple[str, list[str]] | None:
    """``(P, answers)`` when ``q`` is empty exactly on the rows where column P has an answer not in ``answers``
    (the wordings of P's answers on the rows where ``q`` was asked): a skip pattern."""
    empty = q.isna()
    if not empty.any() or empty.all():
        return None
    for name, p, wording in others:
        codes = _codes(p).fillna("(empty)")
        by_value = empty.groupby(codes).agg(["all", "any"])
        asked = [v for v, row in by_value.iterrows() if not row["any"]]
        skipped = [v for v, row in by_value.iterrows() if row["all"]]
        if asked and skipped and len(asked) + len(skipped) == len(by_value) and "(empty)" not in asked:
            return name, [str(wording.get(v, v)) for v in asked]
    return None


def classify(frame: pd.DataFrame, questions: dict[str, str], value_labels: dict[str, dict[str, str]]) -> Draft:
    draft = Draft()
    n = len(frame)
    no_answer = sorted({t for labels in value_labels.values() for t in labels.values() if NO_ANSWER.search(t)}
                       | {v for c in frame.columns if not value_labels.get(str(c)) and _numeric(frame[c]) is None
                          for v in frame[c].dropna().astype(str).unique() if NO_ANSWER.search(v)})
    draft.missing = no_answer
    candidates: list[tuple[str, pd.Series]] = []
    for column in frame.columns:
        name, values = str(column), frame[column]
        label, labels = questions.get(name), value_labels.get(name, {})
        numbers, distinct = _numeric(values), values.nunique(dropna=True)
        if draft.id_column is None and ID_NAMES.search(name) and values.notna().all() and distinct == n:
            draft.id_column = name
        elif (draft.weight is None and numbers is not None and WEIGHT_NAMES.search(name) and values.notna().all()
              and (numbers >= 0).all() and numbers.sum() > 0 and distinct > 1):
            draft.weight = name
        elif distinct < 2:
            draft.skipped.append(f"{name}: one value only")
        elif _is_attribute(name, label):
            attr = re.sub(r"\W+", "_", name.lower()).strip("_") or f"attr{len(draft.attributes)}"
            if distinct <= MAX_OPTIONS:
                draft.attributes[attr] = {"column": name, **({"labels": {_key(c): t for c, t in labels.items()}}
                                                             if labels else {})}
            elif numbers is not None and (binned := _bins(name, numbers.dropna())) is not None:
                draft.attributes[attr] = {"column": name, "bins": binned[0], "bin_labels": binned[1]}
            else:
                draft.skipped.append(f"{name}: attribute-like but {distinct} distinct texts (group them first)")
        elif distinct <= MAX_OPTIONS or (labels and distinct <= len(labels) + 2):
            candidates.append((name, values))
        elif numbers is None:
            draft.skipped.append(f"{name}: free text ({distinct} distinct answers); add it with free_text: true "
                                 "if agents should write answers")
        else:
            draft.skipped.append(f"{name}: numeric with {distinct} distinct values (not multiple choice)")
    wordings = {name: value_labels.get(name) or {c: c for c in _codes(values).dropna().unique()}
                for name, values in candidates}
    ids = {name: re.sub(r"\W+", "_", name).strip("_") or f"q{i + 1}" for i, (name, _) in enumerate(candidates)}
    answer_words: dict[str, set[str]] = {}  # each question's option wordings, for ask_if
    for i, (name, values) in enumerate(candidates):
        qid = ids[name]
        options, unlabelled = _options(values, value_labels.get(name, {}), set(no_answer))
        notes = []
        text = questions.get(name)
        if text is None:
            text = name
            notes.append("TODO: write the question as asked (the file has no label for this column)")
        if unlabelled:
            notes.append(f"TODO: write the wording of answer codes {unlabelled[:8]} (no value labels)")
            if not value_labels.get(name):
                draft.maybe_missing += [c for c in MISSING_CODES if str(c) in unlabelled]
        earlier = [(other, v, wordings[other]) for other, v in candidates[:i]]
        question = {"id": qid, "column": name, "text": text, "options": options}
        if (skip := _skip_pattern(values, earlier)) is not None:
            parent, asked = skip
            shown = (f"asked only when '{ids[parent]}' is {' or '.join(repr(a) for a in asked)} "
                     "(empty exactly for the others)")
            if set(asked) <= answer_words[parent]:
                question["ask_if"] = {"question": ids[parent], "in": asked}
                notes.append(f"{shown}: ask_if below asks agents the same way; check it against the questionnaire")
            else:  # a condition on a no-answer code, which is no option to test
                notes.append(f"{shown}: agents are asked it regardless; keep it only if the wording makes sense "
                             "to everyone, else drop or reword it")
        draft.questions.append(question)
        answer_words[name] = {str(o) for o in (options.values() if isinstance(options, dict) else options)}
        if notes:
            draft.notes[qid] = notes
    draft.maybe_missing = sorted(set(draft.maybe_missing))
    return draft


def _flow(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10**9, sort_keys=False, allow_unicode=True).strip() \
        .removesuffix("\n...").strip()


def render(draft: Draft, *, name: str, source: str, rows: int, labelled: bool) -> str:
    train = rows - round(0.3 * rows)
    exemplars = max(1, min(60, train))
    personas = max(1, min(4, train // 10 or 1, exemplars))
    attrs = ", ".join(f"{a} ({s['column']})" for a, s in draft.attributes.items()) or "none"
    lines = [
        f"# Drafted by `popsim init` from {source} ({rows} rows). Check before trusting any result:",
        "#  - name: names the run folder runs/<name>.",
        f"#  - attributes ({attrs}): they make up the agents' profiles and the subgroups of the report;",
        "#    move a column between attributes and questions if it is the other kind.",
        f"#  - questions ({len(draft.questions)}): wording and options; "
        + ("texts and options come from the file's labels." if labelled else "a CSV has no question wording: "
           "write it where a TODO says so."),
        "#  - data.test_fraction: the share of respondents held out (agents are drawn from them and compared "
        "with them).",
        "#  - simulation.agents and the mop sizes are small so a first run is quick; raise them for real runs.",
    ]
    if draft.skipped:
        lines.append("# Columns left out: " + "; ".join(draft.skipped[:20]))
    lines += [f"name: {_flow(name)}", "kind: survey", "seed: 0", "", "data:", f"  source: {_flow(source)}"]
    if draft.id_column:
        lines.append(f"  id_column: {_flow(draft.id_column)}")
    else:
        lines.append("  # id_column: no unique respondent id found; rows are numbered")
    if draft.weight:
        lines.append(f"  weight: {_flow(draft.weight)}          # check: the survey weight")
    lines.append("  test_fraction: 0.3")
    if draft.missing:
        lines.append(f"  missing: {_flow(draft.missing)}   # answers that mean no answer (labelled as such)")
    if draft.maybe_missing:
        lines.append(f"  # missing: {_flow(draft.maybe_missing)}   # if these codes mean don't know / refused "
                     "in your codebook")
    if draft.attributes:
        lines.append("  attributes:")
        for attr, spec in draft.attributes.items():
            lines.append(f"    {_flow(attr)}: {_flow(spec)}")
    else:
        lines.append("  # attributes: none recognised; add respondent attributes (age, sex, ...) here")
    lines += ["", "questions:"]
    for q in draft.questions:
        lines += [f"  # {note}" for note in draft.notes.get(q["id"], [])]
        lines.append(f"  - {_flow(q)}")
    lines += ["", "mop:", f"  n_personas: {personas}", f"  n_exemplars: {exemplars}",
              "  exemplar_questions: 1      # with exemplar_asked: the exemplar's answer to the question asked",
              "  exemplar_asked: true       # agents follow a lone shown answer: make it that one (docs/methods.md)",
              "  calibrate_exemplars: true  # every exemplar drawn about equally often",
              "  calibrate_personas: true   # each persona drawn at its cluster's share", "  max_train_records: 64",
              "  epochs: 2", "", "simulation:", "  agents: 50", "  method: mop", "",
              "lm:", "  name: smollm2-135m-instruct   # the embedded default; any local folder, .gguf or HF id", ""]
    return "\n".join(lines)


def draft_scenario(data_file: str | Path, *, source: str | None = None) -> str:
    """The scenario YAML drafted from ``data_file``; ``source`` is how ``data.source`` names it."""
    from popsim.data import _read_table
    from popsim.survey_files import LABELLED_SUFFIXES

    path = Path(data_file)
    if not path.is_file():
        raise PopsimError(f"data file {path} does not exist{' (it is a folder)' if path.is_dir() else ''}; "
                          "pass the path of a CSV, parquet, JSONL, SPSS, Stata or SAS file to popsim init")
    frame, labels = _read_table(str(path))
    draft = classify(frame, labels.questions, labels.options)
    if not draft.questions:
        raise PopsimError(f"data file {path}: no column looks like a multiple-choice question (2-{MAX_OPTIONS} "
                          "distinct answers); check the file, or write the scenario by hand (docs/scenarios.md)")
    name = re.sub(r"[^\w.-]+", "-", path.stem).strip("-.") or "my-survey"
    return render(draft, name=name, source=source or str(path), rows=len(frame),
                  labelled=path.suffix.lower() in LABELLED_SUFFIXES)


def init_command(data_file: str, out: str | None, force: bool) -> int:
    """The CLI: print the draft, or write it to ``out`` (never over an existing file without --force)."""
    if out is None:
        print(draft_scenario(data_file), end="")
        return 0
    target = Path(out)
    if target.exists() and target.resolve() == Path(data_file).resolve():
        raise PopsimError(f"-o {target} is the data file itself; write the scenario to another file, e.g. "
                          f"{target.with_suffix('.yaml').name}")
    if target.exists() and not force:
        raise PopsimError(f"{target} already exists; pass --force to overwrite it, or choose another -o FILE")
    source = os.path.relpath(Path(data_file).resolve(), target.resolve().parent)
    text = draft_scenario(data_file, source=source)
    try:
        target.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise PopsimError(f"cannot write {target} ({exc.strerror or type(exc).__name__}); choose another -o FILE") \
            from None
    print(f"wrote {target}: check its comments, then `popsim validate {target}` and `popsim run {target}`")
    return 0
