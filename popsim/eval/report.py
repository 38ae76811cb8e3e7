"""Subgroup fidelity report: CSV tables, a long-tail plot, and self-contained Markdown / HTML pages.

:func:`build_report` scores one or more simulated runs (e.g. ``"mop"`` and ``"uniform"``) against a real
held-out population with :func:`popsim.eval.subgroups.cell_fidelity` and writes, atomically, into
``out_dir``: ``cells.csv``, ``worst_cells.csv``, ``noise_floor.csv``, ``longtail.png``, ``report.md``,
``report.html`` (the plot embedded as a data URI, no external assets) and, when the runs carry a
``persona`` column, ``persona_composition.csv``.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from popsim.eval.composition import persona_composition
from popsim.eval.subgroups import (
    cell_fidelity,
    noise_floor_curve,
    respondent_table,
    split_half_noise_floor,
)
from popsim.exceptions import DataError
from popsim.io import atomic_write_bytes, atomic_write_text

__all__ = ["BANNER", "build_report", "method_headline", "worst_cells"]

BANNER = "Synthetic-population output: simulated answers, not real respondents"

_NOTES = [
    "TV is the total variation distance 0.5 * sum |p - q| between the real cell's weighted answer shares and "
    "the synthetic agents' answer shares (last round), averaged over questions. Lower is better.",
    "Representativeness is OpinionQA's 1 - W1 / (options - 1) over ordinal option positions. Higher is better.",
    "CI: 2.5-97.5 percentiles of the question-mean TV when respondents are resampled within the cell in both "
    "tables (seeded bootstrap), re-centred on the point estimate.",
    "Noise floor: the mean TV a perfect simulator would get at this cell's sizes, by plug-in bootstrap: "
    "synth_n draws from the real cell (weight-proportional) vs a resample of the real cell's real_n rows.",
    "A cell is worse than the floor when its CI lower bound exceeds its noise floor. Cells with fewer real "
    "respondents than the suppression threshold are not scored.",
    "Headline: overall TV is the whole-population cell; mean TV and the share worse than the floor are over "
    "the scored subgroup cells (one or more attributes).",
]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;
color:#1b1b1b;background:#fff;padding:0 1rem}
.banner{background:#fff3cd;border:2px solid #b58100;color:#5c4200;padding:.8rem 1rem;font-weight:600;
border-radius:6px;margin-bottom:1.2rem}
table{border-collapse:collapse;margin:.6rem 0 1.4rem;font-size:.9rem}
th,td{border:1px solid #ccc;padding:.25rem .55rem;text-align:right}
th{background:#eef2f7}td{white-space:nowrap}td:first-child,th:first-child{text-align:left}
.cells td:nth-child(2),.cells th:nth-child(2){text-align:left}.scroll{overflow-x:auto}
img{max-width:100%;height:auto;border:1px solid #ddd}figcaption{color:#555;font-size:.9rem}
"""


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


def method_headline(cells: pd.DataFrame) -> pd.DataFrame:
    """Per method: overall TV (the "all" cell) with CI and its noise floor, mean TV over scored subgroup
    cells beside the mean noise floor of those cells (size-matched bootstrap, and real-vs-real split-half
    when present), share of cells worse than the floor, and how many cells were scored or suppressed."""
    rows = []
    for method, c in cells.groupby("method", sort=False):
        overall = c[c["order"] == 0].iloc[0]
        sub = c[(c["order"] > 0) & ~c["suppressed"] & c["tv"].notna()]
        rows.append({
            "method": method, "overall_tv": overall["tv"], "overall_tv_ci_low": overall["tv_ci_low"],
            "overall_tv_ci_high": overall["tv_ci_high"], "overall_noise_floor": overall["noise_floor_tv"],
            "mean_tv_cells": sub["tv"].mean(), "mean_noise_floor_cells": sub["noise_floor_tv"].mean(),
            "mean_split_half_cells": sub["split_half_tv"].mean() if "split_half_tv" in sub else np.nan,
            "share_worse_than_floor": sub["worse_than_floor"].mean() if len(sub) else np.nan,
            "n_cells_scored": len(sub), "n_cells_suppressed": int(c["suppressed"].sum()),
        })
    return pd.DataFrame(rows)


def worst_cells(cells: pd.DataFrame, k: int = 10) -> pd.DataFrame:
    """Per method, the ``k`` scored subgroup cells with the largest TV excess over their noise floor."""
    scored = cells[(cells["order"] > 0) & ~cells["suppressed"] & cells["excess_tv"].notna()]
    cols = ["method", "cell", "real_n", "synth_n", "tv", "tv_ci_low", "tv_ci_high", "noise_floor_tv",
            "excess_tv", "worse_than_floor"] + (["split_half_tv"] if "split_half_tv" in cells else [])
    out = scored.sort_values("excess_tv", ascending=False).groupby("method", sort=False).head(k)
    return out[cols].reset_index(drop=True)


def _longtail_png(cells: pd.DataFrame, floor: pd.DataFrame, *, min_n: int, title: str) -> bytes:
    """Fidelity TV vs real cell size (log x), one series per method with CI bars, plus the noise floor."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 5.5), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.fill_between(floor["n"], floor["tv_low"], floor["tv_high"], color="0.6", alpha=0.25, lw=0)
    ax.plot(floor["n"], floor["tv"], "k--", lw=1.4, label="noise floor: size-n real sample vs full real (95% band)")
    methods = list(dict.fromkeys(cells["method"]))
    for i, method in enumerate(methods):
        c = cells[(cells["method"] == method) & ~cells["suppressed"] & cells["tv"].notna()]
        x = c["real_n"].to_numpy(float) * (1 + 0.04 * (i - (len(methods) - 1) / 2))  # jitter apart
        err = np.vstack([c["tv"] - c["tv_ci_low"], c["tv_ci_high"] - c["tv"]]).clip(min=0)
        ax.errorbar(x, c["tv"], yerr=err, fmt="o", ms=4, capsize=2, elinewidth=0.8, alpha=0.8, label=method)
    ax.axvline(min_n, color="tab:red", ls=":", lw=1, label=f"suppression threshold (n < {min_n})")
    ax.set_xscale("log")
    ax.set_xlabel("real respondents in cell (log scale)")
    ax.set_ylabel("mean TV over questions (lower is better)")
    ax.set_ylim(bottom=0)
    ax.set_title(f"{title}: fidelity by cell size", fontsize=11)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _fmt(v: Any) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (float, np.floating)):
        return "–" if np.isnan(v) else f"{v:.3f}"
    return str(v)


def _md_table(df: pd.DataFrame) -> str:
    head = "| " + " | ".join(map(str, df.columns)) + " |\n|" + "---|" * len(df.columns) + "\n"
    body = "".join("| " + " | ".join(_fmt(v).replace("|", "\\|") for v in row) + " |\n"
                   for row in df.itertuples(index=False, name=None))
    return head + body


def _html_table(df: pd.DataFrame) -> str:
    return df.to_html(index=False, border=0, escape=True, formatters={c: _fmt for c in df.columns})


def _context(real: pd.DataFrame, options: Mapping[str, Sequence[Any]], attributes: Sequence[str],
             runs: Mapping[str, pd.DataFrame], min_n: int, max_order: int) -> list[str]:
    sizes = ", ".join(f"{m} ({len(f)} agents)" for m, f in runs.items())
    return [f"Real respondents: {len(real)}; questions: {len(options)} ({', '.join(map(str, options))}).",
            f"Methods: {sizes}; last round of each run.",
            f"Cells: all, each value of {', '.join(attributes) or 'no attribute'}, and intersections of up to "
            f"{max_order} attributes; suppressed below {min_n} real respondents."]


def _markdown(title, context, head, worst, notes) -> str:
    parts = [f"# {title}\n", f"> **{BANNER}**\n", *[f"- {c}" for c in context], "",
             "## Headline\n", _md_table(head), "## Fidelity by cell size\n", "![long-tail plot](longtail.png)\n",
             "## Worst cells (TV above noise floor)\n", _md_table(worst) if len(worst) else "No scored cells.\n",
             "## How to read this\n", *[f"- {n}" for n in notes], "",
             "Full tables: `cells.csv`, `worst_cells.csv`, `noise_floor.csv`.\n"]
    return "\n".join(parts)


def _html(title, context, head, worst, cells, png: bytes, notes) -> str:
    e = html.escape
    uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    items = "".join(f"<li>{e(c)}</li>" for c in context)
    note_items = "".join(f"<li>{e(n)}</li>" for n in notes)
    worst_html = f'<div class="cells">{_html_table(worst)}</div>' if len(worst) else "<p>No scored cells.</p>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{e(title)}</title><style>{_CSS}</style></head>
<body>
<div class="banner" id="synthetic-banner" role="note">{e(BANNER)}</div>
<h1>{e(title)}</h1>
<ul>{items}</ul>
<h2>Headline</h2>
{_html_table(head)}
<h2>Fidelity by cell size</h2>
<figure><img id="longtail-plot" alt="Mean TV by real cell size for each method, with the noise floor" src="{uri}">
<figcaption>Each point is a cell; bars are bootstrap 95% CIs; the dashed line is the real-vs-real noise floor.
</figcaption></figure>
<h2>Worst cells (TV above noise floor)</h2>
{worst_html}
<h2>How to read this</h2>
<ul>{note_items}</ul>
<details><summary>All cells ({len(cells)} rows)</summary>
<div class="cells scroll">{_html_table(cells)}</div>
</details>
</body></html>
"""


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
) -> dict[str, Path]:
    """Score each run's last round against ``real`` per subgroup cell and write the report files.

    ``runs`` maps a method name to its responses (a DataFrame, a parquet/CSV file or a run directory);
    ``real`` is the held-out population (one row per respondent, optional ``weight`` column). Returns
    {name: path} for cells, worst_cells, noise_floor, longtail, report_md, report_html and, when the runs
    have a ``persona`` column, persona_composition.
    """
    if not runs:
        raise DataError("`runs` is empty; pass {method name: responses frame}")
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
    cells = cells.merge(halves[["cell", "split_half_tv"]], on="cell", how="left")
    n_real = len(real_df)
    sizes = np.unique(np.round(np.geomspace(min(5, n_real), n_real, 12)).astype(int))
    floor = noise_floor_curve(real_df, options, sizes, n_rep=100, seed=seed, weights_col=weights_col)
    head, worst = method_headline(cells), worst_cells(cells, worst_k)
    png = _longtail_png(cells, floor, min_n=min_n, title=title)
    context = _context(real_df, options, attributes, frames, min_n, max_order)

    out = Path(out_dir)
    paths = {
        "cells": atomic_write_text(out / "cells.csv", cells.to_csv(index=False)),
        "worst_cells": atomic_write_text(out / "worst_cells.csv", worst.to_csv(index=False)),
        "noise_floor": atomic_write_text(out / "noise_floor.csv", floor.to_csv(index=False)),
        "longtail": atomic_write_bytes(out / "longtail.png", png),
    }
    with_persona = {m: f for m, f in frames.items() if "persona" in f.columns}
    if with_persona:
        comp = pd.concat([persona_composition(f, attributes).assign(method=m) for m, f in with_persona.items()])
        comp = comp[["method"] + [c for c in comp.columns if c != "method"]]
        paths["persona_composition"] = atomic_write_text(out / "persona_composition.csv", comp.to_csv(index=False))
    paths["report_md"] = atomic_write_text(out / "report.md", _markdown(title, context, head, worst, _NOTES))
    paths["report_html"] = atomic_write_text(
        out / "report.html", _html(title, context, head, worst, cells, png, _NOTES)
    )
    return paths
