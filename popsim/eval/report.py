"""Subgroup fidelity report: what each group answered, real beside simulated, and whether that is good enough.

:func:`build_report` scores one or more simulated runs (e.g. ``"mop"`` and ``"uniform"``) against a real
held-out population and writes, atomically, into ``out_dir``:

* ``report.html`` (self-contained: images as data URIs) and ``report.md`` (the same content, images as PNG
  files beside it): a one-screen summary with plain-word verdicts per subgroup family
  (:mod:`popsim.eval.verdicts`), one small-multiples panel per question, worst first, with real and
  simulated answer shares and the error's direction in words (:mod:`popsim.eval.answers`,
  :mod:`popsim.eval.charts`), the long-tail plot and the worst subgroups;
* ``questions.csv`` (shares per question, group, source and option, with the real shares' 95% band),
  ``question_errors.csv``, ``cells.csv``, ``worst_cells.csv``, ``noise_floor.csv``, ``longtail.png``,
  ``question_<id>.png`` and, when the runs carry a ``persona`` column, ``persona_composition.csv``.

Other sections (a survey experiment's effects, whom the agents stand for) are passed in as ``extra_sections``
(:class:`popsim.eval.page.Section`) and rendered by the same page code; review runs get their own report from
the same page code (:mod:`popsim.eval.text_report`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from popsim.eval.answers import question_errors, question_order, question_shares
from popsim.eval.charts import longtail_png, question_png
from popsim.eval.composition import persona_composition
from popsim.eval.page import Figure, Section, Table, anchor, render_html, render_markdown
from popsim.eval.subgroups import cell_fidelity, noise_floor_curve, respondent_table, split_half_noise_floor
from popsim.eval.verdicts import family_verdicts, method_headline, summary_table, thresholds, verdict_table
from popsim.exceptions import DataError
from popsim.io import atomic_write_bytes, atomic_write_text

__all__ = ["BANNER", "build_report", "method_headline", "panel_attribute", "worst_cells"]

BANNER = "Synthetic-population output: simulated answers, not real respondents"

def _notes(weighted: bool, split_ratio: float) -> tuple[str, ...]:
    """How to read the report; ``weighted``: the real table carries unequal weights; ``split_ratio``: the median
    ratio of the split-half floor to the size-matched floor over the scored subgroups."""
    split = (f"the median over these subgroups is {split_ratio:.2f}x the size-matched floor (it ignores how "
             "many agents there are)" if np.isfinite(split_ratio) else "it ignores how many agents there are")
    real = ("Real answer shares are weighted by the survey weights; their 95% band is the Wilson interval at Kish's "
            "effective sample size." if weighted else "Real answer shares count each respondent once (the data "
            "name no survey weight); their 95% band is the Wilson interval.")
    return (
        "TV is the total variation distance 0.5 * sum |p - q| between the real respondents' answer shares "
        "and the simulated agents' shares (last round), averaged over questions: 0 is identical, 1 is no overlap.",
        "95% interval: 2.5-97.5 percentiles of the question-mean TV when respondents are resampled within the "
        "group in both tables (seeded bootstrap), re-centred on the point estimate.",
        "Noise floor: the mean TV a perfect simulator would get at this group's sizes (plug-in bootstrap: as many "
        "draws from the real group as there are agents vs a resample of the real group); the verdicts use it. A "
        "group is worse than the floor when its interval's lower end is above its floor; a group within the floor "
        "is one this many agents cannot show to be worse, not one shown to be as good.",
        f"Split-half floor: the TV between two random halves of the real group (real vs real); {split}.",
        "Real group vs all real respondents: how far the group's real answers are from everyone's. A simulation "
        "further than this from the group got it less right than the guess \"this group answers like everyone\" "
        "(a demanding bar: that guess knows the held-out respondents' real answers).",
        real + " Simulated agents count by their weights (a run aimed at target margins, or with small cells "
        "oversampled), else once each.",
    )


_WORST_LABELS = {
    "method": "Method", "cell": "Subgroup", "real_n": "Real respondents", "synth_n": "Simulated agents",
    "tv": "TV (0-1, lower is better)", "noise_floor_tv": "Noise floor", "excess_tv": "TV above the floor",
    "worse_than_floor": "Worse than the floor", "split_half_tv": "Split-half floor (real vs real)",
    "group_vs_all_tv": "Real group vs all real respondents",
}


def _load(obj: pd.DataFrame | str | Path, what: str) -> pd.DataFrame:
    """A DataFrame as given, or read from a parquet/CSV file or a run directory's responses.parquet."""
    if isinstance(obj, pd.DataFrame):
        return obj
    path = Path(obj)
    if path.is_dir():
        path = path / "responses.parquet"
    if not path.is_file():
        raise DataError(f"{what}: no table at {path}; pass a DataFrame, a .parquet/.csv file or a run directory")
    if path.suffix == ".csv":
        frame = pd.read_csv(path, dtype=str)
        for col in ("weight", "agent", "round", "persona", "exemplar", "temperature"):
            if col in frame.columns:
                frame[col] = pd.to_numeric(frame[col])
        return frame
    return pd.read_parquet(path)


def panel_attribute(by: str | None, attributes: list[str], *, name: str = "`by`") -> str | None:
    """The attribute whose groups get their own panels (default: the first one), checked against the runs'
    attributes; ``name`` is how the caller's user spells the option in the error."""
    names = [a.removeprefix("attr_") for a in attributes]
    if by is None:
        return names[0] if names else None
    if by.removeprefix("attr_") not in names:
        raise DataError(f"{name} must be one of the runs' attributes ({', '.join(names) or 'none'}); got {by!r}")
    return by.removeprefix("attr_")


def worst_cells(cells: pd.DataFrame, k: int = 10) -> pd.DataFrame:
    """Per method, the ``k`` scored subgroup cells with the largest TV excess over their noise floor."""
    scored = cells[(cells["order"] > 0) & ~cells["suppressed"] & cells["excess_tv"].notna()]
    cols = ["method", "cell", "real_n", "synth_n", "tv", "tv_ci_low", "tv_ci_high", "noise_floor_tv",
            "excess_tv", "worse_than_floor"] + [c for c in ("split_half_tv", "group_vs_all_tv") if c in cells]
    out = scored.sort_values("excess_tv", ascending=False).groupby("method", sort=False).head(k)
    return out[cols].reset_index(drop=True)


def _worst_for_people(worst: pd.DataFrame) -> pd.DataFrame:
    """The worst-cells table with names in words and TV rounded to 2 decimals (what its intervals support)."""
    out = pd.DataFrame({_WORST_LABELS[c]: worst[c] for c in _WORST_LABELS if c in worst.columns})
    for col in ("TV (0-1, lower is better)", "Noise floor", "TV above the floor", "Split-half floor (real vs real)",
                "Real group vs all real respondents"):
        if col in out:
            out[col] = [_two(v) for v in out[col]]
    out.insert(5, "95% interval", [f"{_two(lo)}–{_two(hi)}" for lo, hi in zip(worst["tv_ci_low"], worst["tv_ci_high"])])
    out["Worse than the floor"] = out["Worse than the floor"].map({True: "yes", False: "no"})
    return out


def _two(v: float) -> str:
    """TV as the report prints it: 2 decimals (what its bootstrap intervals support), a dash when missing."""
    return f"{v:.2f}" if np.isfinite(v) else "–"


def _question_table(errors: pd.DataFrame, order: list[str], wording: Mapping[str, str]) -> Table:
    """Questions worst first: each method's whole-population TV and the first method's largest gap."""
    whole = errors[errors["group"] == "all"]
    methods = list(dict.fromkeys(whole["method"]))
    rows = []
    for rank, q in enumerate(order, 1):
        e = whole[whole["question"] == q].set_index("method")
        row = {"Rank": str(rank), "Question": f"{q}: {wording[q]}" if q in wording else q}
        row.update({f"TV, {m} (0-1)": _two(e.loc[m, "tv"]) for m in methods})
        row[f"Largest gap ({methods[0]})"] = e.loc[methods[0], "direction"]
        rows.append(row)
    return Table(pd.DataFrame(rows), caption="Questions, worst first", collapse=len(rows) > 25,
                 csv="question_errors.csv")


def _panel_text(q: str, errors: pd.DataFrame, methods: list[str], min_n: int) -> tuple[str, str]:
    """Alt text and caption of one question's panel: TVs, and each method's largest gap overall and by group."""
    e = errors[errors["question"] == q]
    whole = e[e["group"] == "all"].set_index("method")
    overall = [f"{m}: TV {_two(whole.loc[m, 'tv'])}; {whole.loc[m, 'direction']}." for m in methods]
    caption = "All respondents. " + " ".join(overall)
    groups = e[(e["group"] != "all") & ~e["suppressed"] & e["gap_pp"].notna()]
    for m in methods:
        g = groups[groups["method"] == m]
        if len(g):
            worst = g.loc[g["gap_pp"].abs().idxmax()]
            caption += f" Largest group gap, {worst['group']}: {worst['direction']}."
    hidden = list(dict.fromkeys(e.loc[e["suppressed"] & (e["group"] != "all"), "group"]))
    if hidden:
        names = ", ".join(g.split("=", 1)[-1] for g in hidden)
        caption += f" Not shown (fewer than {min_n} real respondents answered): {names}."
    alt = (f"Bar charts of the answer shares for question {q}: real respondents as a black line with a grey "
           f"95% band, {', '.join(methods)} as bars, for all respondents and by group. " + " ".join(overall))
    return alt, caption


def _question_figures(shares, errors, order, options, methods, by, wording, min_n) -> list[Figure]:
    figures = []
    for rank, q in enumerate(order, 1):
        alt, caption = _panel_text(q, errors, methods, min_n)
        heading = f"{rank}. {q}" + (f": {wording[q]}" if q in wording else "")
        figures.append(Figure(id=f"panel-{anchor(q)}", png=question_png(shares, q, options[q], methods, by=by),
                              alt=alt, file=f"question_{anchor(q)}.png", heading=heading, caption=caption,
                              attrs={"data-question": str(q)}))
    return figures


def _worst_gap(errors: pd.DataFrame, method: str, question: str) -> str:
    e = errors[(errors["method"] == method) & (errors["group"] == "all") & (errors["question"] == question)]
    return f"TV {_two(e['tv'].iloc[0])}; {e['direction'].iloc[0]}"


def _sections(cells, errors, order, figures, longtail, worst, *, context, by, min_n, wording):
    """The survey report's sections, summary first."""
    families = family_verdicts(cells, min_n=min_n)
    first = errors["method"].iloc[0]
    pairs = verdict_table(families, orders=tuple(range(2, 10)))
    summary = [context, Table(summary_table(cells), caption="Overall fit per method", collapse=False),
               Table(verdict_table(families, orders=(0, 1)), caption="Good enough for my subgroup?",
                     collapse=False),
               f"Largest errors of {first} (all respondents; panels below):",
               tuple(f"{q}: {_worst_gap(errors, first, q)}" for q in order[:3]),
               "How the verdicts are decided:", tuple(thresholds(min_n))]
    if len(pairs):
        summary.append(Table(pairs, caption="Intersections of attributes", collapse=True, csv="cells.csv"))
    by_text = f" and each group of {by} with at least {min_n} real respondents" if by else ""
    questions = [f"One panel per question, worst first (ordered by {first}'s TV on all respondents). Bars: the "
                 "share of each method's agents choosing the option; black line: the share of real respondents; "
                 f"grey band: its 95% interval. Panels: all respondents{by_text}.",
                 _question_table(errors, order, wording), *figures]
    worst_table = (Table(_worst_for_people(worst), caption="Subgroups furthest above their noise floor",
                         csv="worst_cells.csv") if len(worst) else "No scored subgroups.")
    return [
        Section("summary", "Summary", summary),
        Section("questions", "What each group answered, question by question", questions),
        Section("longtail", "Fidelity by subgroup size", [longtail]),
        Section("worst", "Worst subgroups", [worst_table]),
    ]


def _persona_use(frames: Mapping[str, pd.DataFrame]) -> str:
    """A sentence per method whose agents hold personas: how many personas were drawn and the largest one's
    share, with a warning when one persona speaks for most agents (every agent's prompt then carries that
    persona's description, whatever its own profile: a gate that routes little)."""
    text = ""
    for method, frame in frames.items():
        if "persona" not in frame.columns or frame["persona"].isna().all():
            continue
        shares = frame["persona"].dropna().astype(int).value_counts(normalize=True)
        top, share = int(shares.index[0]), float(shares.iloc[0])
        text += (f" Personas ({method}): the agents drew {len(shares)} distinct persona{'s' * (len(shares) > 1)}; "
                 f"persona {top} is in {100 * share:.0f}% of their prompts.")
        if share > 0.5:
            text += (f" One persona description reaches most of {method}'s agents, whatever their own profile: its "
                     "gate hardly routes, and the profiles and exemplars carry the differences between agents "
                     "(persona texts: personas.json).")
    return text


def build_report(
    runs: Mapping[str, pd.DataFrame | str | Path],
    real: pd.DataFrame | str | Path,
    options: Mapping[str, Sequence[Any]],
    attributes: Sequence[str],
    out_dir: str | Path,
    *,
    title: str = "popsim fidelity report",
    min_n: int = 20,
    max_order: int = 2,
    worst_k: int = 10,
    seed: int = 0,
    n_boot: int = 200,
    weights_col: str | None = "weight",
    by: str | None = None,
    wording: Mapping[str, str] | None = None,
    extra_sections: Sequence[Section] = (),
) -> dict[str, Path]:
    """Score each run's last round against ``real`` per subgroup and question, and write the report files.

    ``runs`` maps a method name to its responses (a DataFrame, a parquet/CSV file or a run directory);
    ``real`` is the held-out population (one row per respondent, optional ``weight`` column). ``by`` is the
    attribute whose groups get their own panels beside the whole population (default: the first of
    ``attributes``); ``wording`` maps question ids to their text for headings; ``extra_sections`` are
    rendered after the survey sections. Returns {name: path} for every file written.
    """
    if not runs:
        raise DataError("`runs` is empty; pass {method name: responses frame}")
    by = panel_attribute(by, attributes)
    names = [a.removeprefix("attr_") for a in attributes]
    real_df = _load(real, "real")
    frames = {str(m): respondent_table(_load(f, f"run {m!r}")) for m, f in runs.items()}
    tables = []
    for method, frame in frames.items():
        cells = cell_fidelity(frame, real_df, options, attributes, max_order=max_order, min_n=min_n,
                              n_boot=n_boot, seed=seed, weights_col=weights_col,
                              persona_col="persona" if "persona" in frame.columns else None)
        cells.insert(0, "method", method)
        tables.append(cells)
    cells = pd.concat(tables, ignore_index=True)
    halves = split_half_noise_floor(real_df, options, attributes, max_order=max_order, min_n=min_n, seed=seed,
                                    weights_col=weights_col)
    cells = cells.merge(halves[["cell", "split_half_tv", "group_vs_all_tv"]], on="cell", how="left")
    n_real = len(real_df)
    sizes = np.unique(np.round(np.geomspace(min(5, n_real), n_real, 12)).astype(int))
    floor = noise_floor_curve(real_df, options, sizes, n_rep=100, seed=seed, weights_col=weights_col)
    worst = worst_cells(cells, worst_k)
    shares = question_shares(frames, real_df, options, by=by, weights_col=weights_col, min_n=min_n)
    errors = question_errors(shares)
    order = question_order(errors)
    methods, wording = list(frames), dict(wording or {})
    figures = _question_figures(shares, errors, order, options, methods, by, wording, min_n)
    longtail = Figure(id="longtail-plot", png=longtail_png(cells, floor, min_n=min_n, title=title),
                      alt="Mean TV by real subgroup size for each method, with 95% intervals, the noise floor "
                          "(dashed) and the size below which subgroups are not scored",
                      file="longtail.png", caption="Each point is a subgroup; bars are bootstrap 95% intervals; "
                      "the dashed line is the real-vs-real noise floor with its 95% band.")
    sizes_text = ", ".join(f"{m}{' (Mixture of Personas)' * (m == 'mop')} ({len(f)} agents)" for m, f in frames.items())
    weighted = bool(weights_col and weights_col in real_df.columns and real_df[weights_col].nunique() > 1)
    context = (f"{n_real} real held-out respondents ({'weighted' if weighted else 'unweighted'}), {len(options)} "
               f"questions; methods: {sizes_text}, "
               f"last round. Subgroups: each value of {', '.join(names) or 'no attribute'} and intersections of "
               f"up to {max_order}; not scored below {min_n} real respondents. TV runs from 0 (same answers) "
               "to 1 (no overlap); the noise floor is the TV a perfect simulator would get at the same sizes.")
    context += _persona_use(frames)
    sections = _sections(cells, errors, order, figures, longtail, worst, context=context, by=by,
                         min_n=min_n, wording=wording)
    scored = cells[(cells["order"] > 0) & ~cells["suppressed"] & (cells["noise_floor_tv"] > 0)]
    split_ratio = float((scored["split_half_tv"] / scored["noise_floor_tv"]).median()) if len(scored) else np.nan
    sections += [*extra_sections, Section("notes", "How to read this", [_notes(weighted, split_ratio)])]

    out = Path(out_dir)
    paths = {
        "cells": atomic_write_text(out / "cells.csv", cells.to_csv(index=False)),
        "worst_cells": atomic_write_text(out / "worst_cells.csv", worst.to_csv(index=False)),
        "noise_floor": atomic_write_text(out / "noise_floor.csv", floor.to_csv(index=False)),
        "questions": atomic_write_text(out / "questions.csv", shares.to_csv(index=False)),
        "question_errors": atomic_write_text(out / "question_errors.csv", errors.to_csv(index=False)),
        "longtail": atomic_write_bytes(out / "longtail.png", longtail.png),
    }
    for fig in figures:
        paths[fig.file.removesuffix(".png")] = atomic_write_bytes(out / fig.file, fig.png)
    with_persona = {m: f for m, f in frames.items() if "persona" in f.columns}
    if with_persona:
        comp = pd.concat([persona_composition(f, attributes).assign(method=m) for m, f in with_persona.items()])
        comp = comp[["method"] + [c for c in comp.columns if c != "method"]]
        paths["persona_composition"] = atomic_write_text(out / "persona_composition.csv", comp.to_csv(index=False))
    files = [p.name for k, p in paths.items() if p.suffix == ".csv"]
    paths["report_md"] = atomic_write_text(out / "report.md", render_markdown(title, BANNER, sections, files=files))
    paths["report_html"] = atomic_write_text(out / "report.html", render_html(title, BANNER, sections, files=files))
    return paths
