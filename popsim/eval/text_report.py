"""The fidelity report of review runs: generated vs held-out real texts, in the survey report's page format.

:func:`build_text_report` scores each run's texts with :func:`popsim.eval.text_fidelity.text_fidelity`
(overall, per rating, per context value; each score beside the real-vs-real floor) and writes, atomically,
into ``out_dir``: ``report.html`` / ``report.md`` (a summary with the verdict in plain words, the table,
sample texts per rating beside real ones, how to read it), ``text_fidelity.csv`` and ``samples.csv``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from popsim.eval.page import Section, Table, render_html, render_markdown
from popsim.eval.report import BANNER
from popsim.eval.text_fidelity import sample_texts, table_for_people, text_fidelity, verdict
from popsim.exceptions import DataError
from popsim.io import atomic_write_text

__all__ = ["build_text_report"]

_NOTES = (
    "Every score compares sentence embeddings (the run's encoder, all-MiniLM-L6-v2 by default) of the generated "
    "texts with those of held-out real texts, as in the MoP paper (Bui et al. 2025).",
    "FID: the Fréchet distance between Gaussians fitted to the two sets of embeddings; 0 is identical, lower is "
    "better. MAUVE: how much the two sets' clusters overlap, 0 to 1, higher is better. KL-cosine: the KL "
    "divergence between the histograms of pairwise cosine similarities within each set (does the generated set "
    "vary as much as the real one?); lower is better.",
    "Distinct-1 / distinct-2: unique words / word pairs over all words / word pairs; lower means more repeated "
    "wording. Both fall as a set grows, so the real figure is taken on as many real texts as there are "
    "generated ones.",
    "Floor: the held-out real texts of the group are cut at random into halves A and B; the generated texts and an "
    "equally large sample of B are each scored against A. What the second half of the real texts scores is what "
    "a perfect simulator would score at this size. Averaged over 5 random halvings; the verdict uses the "
    "floor's lowest and highest halving as its spread.",
    "Groups: all texts, each rating and each context value with at least 20 real and 10 generated texts. Small "
    "groups give noisy scores; simulate more agents for firmer ones.",
)


def _summary(tables: Mapping[str, pd.DataFrame], real: pd.DataFrame) -> list:
    blocks: list = [f"{len(real)} held-out real texts; methods: "
                    + ", ".join(f"{m} ({int(t['n_generated'].iloc[0])} texts)" for m, t in tables.items())
                    + ". Each score is shown beside its real-vs-real floor in brackets."]
    blocks.append(tuple(f"{m}: {verdict(t.iloc[0])}." for m, t in tables.items()))
    for method, table in tables.items():
        caption = f"Generated vs real texts, {method} (floor in brackets)" if len(tables) > 1 else \
            "Generated vs real texts (floor in brackets)"
        blocks.append(Table(table_for_people(table), caption=caption, collapse=False, csv="text_fidelity.csv"))
    groups = [(m, r) for m, t in tables.items() for _, r in t.iloc[1:].iterrows()]
    if groups:
        blocks.append("By group:")
        blocks.append(tuple(f"{m}, {r['group']}: {verdict(r)}." for m, r in groups))
    return blocks


def _samples(samples: pd.DataFrame) -> list:
    if samples.empty:
        return ["No texts to show."]
    blocks: list = ["Texts drawn at random (seeded) from each group: generated on the left, held-out real on the "
                    "right. Reading a few is the quickest check of tone, length and topic."]
    for (method, group), rows in samples.groupby(["method", "group"], sort=False):
        frame = pd.DataFrame({"Generated text": rows["generated"].to_numpy(), "Real text": rows["real"].to_numpy()})
        blocks.append(Table(frame, caption=f"{group}, {method}", collapse=False))
    return blocks


def build_text_report(
    runs: Mapping[str, pd.DataFrame],
    real: pd.DataFrame,
    out_dir: str | Path,
    *,
    embed: Callable[[Sequence[str]], np.ndarray],
    title: str = "popsim text fidelity report",
    seed: int = 0,
    k: int = 3,
) -> dict[str, Path]:
    """Score each run's generated texts (``text`` + ``attr_*`` columns) against ``real`` and write the report.

    ``runs`` maps a method name to its generated texts; ``embed`` turns texts into sentence embeddings.
    Returns {name: path} for every file written.
    """
    if not runs:
        raise DataError("`runs` is empty; pass {method name: generated texts}")
    tables = {m: text_fidelity(g, real, embed, seed=seed) for m, g in runs.items()}
    samples = pd.concat([sample_texts(g, real, k=k, seed=seed).assign(method=m) for m, g in runs.items()],
                        ignore_index=True)
    sections = [
        Section("summary", "Summary", _summary(tables, real)),
        Section("samples", "Sample texts, generated beside real", _samples(samples)),
        Section("notes", "How to read this", [_NOTES]),
    ]
    out = Path(out_dir)
    scored = pd.concat([t.assign(method=m) for m, t in tables.items()], ignore_index=True)
    scored = scored[["method"] + [c for c in scored.columns if c != "method"]]
    paths = {
        "text_fidelity": atomic_write_text(out / "text_fidelity.csv", scored.to_csv(index=False)),
        "samples": atomic_write_text(out / "samples.csv", samples[["method", "group", "generated", "real"]]
                                     .to_csv(index=False)),
    }
    files = [p.name for p in paths.values()]
    paths["report_md"] = atomic_write_text(out / "report.md", render_markdown(title, BANNER, sections, files=files))
    paths["report_html"] = atomic_write_text(out / "report.html", render_html(title, BANNER, sections, files=files))
    return paths
