"""The report's "Whom the agents stand for" section: target vs achieved margins, design effect, effective n.

Read from a run folder's ``population.json`` (written when the scenario has a ``population:`` section).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from popsim.eval.page import Section, Table

__all__ = ["population_section"]


def population_section(run_dir: str | Path) -> Section | None:
    """The section for ``run_dir``, or None when the run has no ``population.json``."""
    path = Path(run_dir) / "population.json"
    if not path.is_file():
        return None
    info = json.loads(path.read_text(encoding="utf-8"))
    margins = pd.DataFrame(info["margins"])
    rows = pd.DataFrame({
        "Margin": margins["margin"], "Category": margins["category"],
        "Target (%)": [f"{100 * v:.1f}" for v in margins["target"]],
        "Achieved, weighted (%)": [f"{100 * v:.1f}" for v in margins["achieved"]],
        "Agents, unweighted (%)": [f"{100 * v:.1f}" for v in margins["unweighted"]],
    })
    gap = float(np.max(np.abs(margins["achieved"] - margins["target"]))) if len(margins) else 0.0
    text = (f"{info['agents']} agents carry weights so that their weighted shares meet the targets (largest gap "
            f"{100 * gap:.1f} points); every share in this report uses them. Design effect of the weights (Kish): "
            f"{info['design_effect']:.2f}, so the agents count as {info['effective_n']:.1f} equally weighted ones "
            "(effective sample size).")
    if info.get("heldout_note"):  # the real comparison is not against the same target population
        text += f" Note: {info['heldout_note']}."
    return Section("population", "Whom the agents stand for", [
        text, Table(rows, caption="Target vs achieved margins", collapse=len(rows) > 12)])
