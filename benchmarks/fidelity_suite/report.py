"""The fidelity benchmark's report: markdown tables of the text and survey results, and the verdicts."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .config import SURVEY_BASELINES_B, SURVEY_METHODS, TEXT_BASELINES


def _fmt(x, nd=3):
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "-"
    return f"{x:.{nd}f}" if isinstance(x, float) else str(x)


def md_table(frame: pd.DataFrame, nd: int = 3) -> str:
    head = "| " + " | ".join(map(str, frame.columns)) + " |\n|" + "---|" * len(frame.columns) + "\n"
    return head + "\n".join("| " + " | ".join(_fmt(v, nd) for v in row) + " |" for row in frame.itertuples(index=False))


def text_tables(text: pd.DataFrame) -> str:
    parts = []
    wide = []
    for method, g in text.groupby("method", sort=False):
        row = {"method": method}
        for _, r in g.iterrows():
            for m, label in (("fid", "FID↓"), ("mauve", "MAUVE↑"), ("kl_cos", "KL-cos↓")):
                row[f"{r['dataset']} {label}"] = r[m]
        wide.append(row)
    parts.append("**Table 1 (paper layout): FID / MAUVE / KL-cosine on MiniLM embeddings, generated vs real "
                 "held-out texts**\n\n" + md_table(pd.DataFrame(wide)))
    wide = []
    for method, g in text.groupby("method", sort=False):
        row = {"method": method}
        for _, r in g.iterrows():
            row[f"{r['dataset']} label FID↓"] = r["label_fid"]
            row[f"{r['dataset']} acc"] = r["accuracy"]
            row[f"{r['dataset']} F1"] = r["macro_f1"]
            row[f"{r['dataset']} dist-2"] = r["distinct2"]
        wide.append(row)
    parts.append("**Table 2: does a text fit its context? Per-label FID (texts written for one label / topic vs "
                 "real texts of that label, weighted mean over labels), train on synthetic / test on real "
                 "(logistic regression on embeddings), and distinct-2**\n\n" + md_table(pd.DataFrame(wide)))
    return "\n\n".join(parts)


PROTOCOLS = {"a": "Protocol (a), new people", "b": "Protocol (b), new questions (unseen items)",
             "c": "Protocol (c), new questions on a new answer scale (unseen scales)"}


def headline(summary: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, protocol): MoP and the best baseline, raw and calibrated (each under the same calibration)."""
    rows = []
    for (d, p, c), g in summary.groupby(["dataset", "protocol", "calibration"], sort=False):
        g = g.set_index("method")
        base = g.loc[[m for m in SURVEY_BASELINES_B if m in g.index], "tv"]
        row = {"dataset": d, "protocol": p, "calibration": c, "mop": g.loc["mop", "tv"], "best_baseline": base.min(),
               "which": base.idxmin(), "noise": g.loc["mop", "noise_floor"]}
        if "tv_sampled" in g:  # the same comparison on one sampled answer per agent
            sampled = g.loc[[m for m in SURVEY_BASELINES_B if m in g.index], "tv_sampled"]
            row.update(mop_sampled=g.loc["mop", "tv_sampled"], best_baseline_sampled=sampled.min())
        for reference in ("hot-deck", "scale-shares", "stand-in-shares"):
            if reference in g.index:
                row[reference] = g.loc[reference, "tv"]
        rows.append(row)
    return pd.DataFrame(rows)


def ablation_table(summary: pd.DataFrame) -> pd.DataFrame | None:
    """MoP and its ablations on the same fit, TV per (dataset, protocol, calibration); None without them."""
    names = ["mop", "mop-uniform-gate", "mop-no-offsets", "mop-tau-fixed", "uniform", "scale-shares"]
    if not summary["method"].isin(names[1:4]).any():
        return None
    wide = summary[summary["method"].isin(names)].pivot_table(index=["dataset", "protocol", "calibration"],
                                                               columns="method", values="tv").reset_index()
    wide = wide[["dataset", "protocol", "calibration", *[m for m in names if m in wide.columns]]]
    if "mop-uniform-gate" in wide:
        wide["gate adds"] = wide["mop-uniform-gate"] - wide["mop"]
    if "scale-shares" in wide:
        wide["LM adds"] = wide["scale-shares"] - wide["mop"]
    return wide


def survey_tables(summary: pd.DataFrame, cells: pd.DataFrame, curve: pd.DataFrame, shares: str = "sampled") -> str:
    """The survey part's markdown; ``shares`` (``expected`` or ``sampled``) says which cell TV the tables rank by."""
    cell_tv = "tv_expected" if shares == "expected" else "tv"
    parts = [f"**Headline: MoP vs the best baseline under the same calibration** (tv as below, from {shares} "
             "shares; *_sampled: from one sampled answer per agent; calibration none = raw answers, posthoc = the "
             "same learned sharpness and per-scale option offsets for every method)\n\n" + md_table(headline(summary))]
    ablation = ablation_table(summary)
    if ablation is not None:
        parts.append("**Ablation of MoP on the same fit** (TV; gate adds = uniform gate minus learned gate, "
                     "positive when the learned gate helps; LM adds = the no-LM scale-shares reference minus MoP)\n\n"
                     + md_table(ablation))
    cols = ["dataset", "method", "calibration", "tv", "tv_sampled", "representativeness", "tv_all", "tv_all_ci",
            "noise_all", "noise_floor", "worse_than_floor", "n_cells", "tv_max_cell", "top_answer"]
    for protocol, title in PROTOCOLS.items():
        s = summary[summary["protocol"] == protocol][[c for c in cols if c in summary]]
        if not len(s):
            continue
        parts.append(f"**{title}**: tv = mean question-TV over the population and each single-attribute "
                     f"subgroup (n >= 20), {shares} shares (tv_sampled: one sampled answer per agent); "
                     "tv_all (sampled) with 95% bootstrap CI; noise = perfect-simulator floor at "
                     "these sizes; worse_than_floor = cells whose CI lies above the floor\n\n" + md_table(s))
    # long tail: TV by real cell size
    c = cells[~cells["suppressed"]].copy()
    c["size"] = pd.cut(c["real_n"], [19, 49, 99, 199, 10**9], labels=["20-49", "50-99", "100-199", "200+"])
    rows = []
    for (d, p, m, cal), g in c.groupby(["dataset", "protocol", "method", "calibration"], sort=False):
        row = {"dataset": d, "protocol": p, "method": m, "calibration": cal}
        for size, gg in g.groupby("size", observed=False):
            row[f"tv n={size}"] = float(gg[cell_tv].mean()) if len(gg) else np.nan
            row[f"floor n={size}"] = float(gg["noise_floor_tv"].mean()) if len(gg) else np.nan
        rows.append(row)
    parts.append(f"**Long tail: mean cell TV ({shares} shares; the floor is for sampled answers) by real cell "
                 "size**\n\n"
                 + md_table(pd.DataFrame(rows)))
    parts.append("**Real-vs-real noise floor curve** (n real respondents vs the whole held-out set)\n\n"
                 + md_table(curve))
    detail = cells[(cells["order"] <= 1) & ~cells["suppressed"]].pivot_table(
        index=["dataset", "protocol", "calibration", "cell", "real_n"], columns="method", values=cell_tv).reset_index()
    parts.append(f"**Per-subgroup TV (single attributes, {shares} shares)**\n\n" + md_table(detail))
    return "\n\n".join(parts)


def verdicts(text: pd.DataFrame | None, summary: pd.DataFrame | None) -> list[str]:
    lines = []
    if text is not None and len(text):
        for d, g in text.groupby("dataset"):
            g = g.set_index("method")
            for m, better in (("fid", "low"), ("mauve", "high"), ("kl_cos", "low"), ("label_fid", "low")):
                base = g.loc[TEXT_BASELINES, m]
                best = base.idxmin() if better == "low" else base.idxmax()
                mine = g.loc["mop", m]
                wins = mine < base[best] if better == "low" else mine > base[best]
                lines.append(f"text {d} {m}: MoP {mine:.3f} vs best baseline {best} {base[best]:.3f} -> "
                             f"{'MoP wins' if wins else 'MoP LOSES'}")
    if summary is not None and len(summary):
        for r in headline(summary).itertuples():
            wins = r.mop < r.best_baseline
            lines.append(f"survey {r.dataset} ({r.protocol}, calibration {r.calibration}) TV: MoP {r.mop:.3f} vs best "
                         f"baseline {r.which} {r.best_baseline:.3f} -> {'MoP wins' if wins else 'MoP LOSES'}")
        for (d, cal), g in summary[summary["protocol"] == "a"].groupby(["dataset", "calibration"]):
            g = g.set_index("method")
            for m in SURVEY_METHODS:
                if m in g.index and "hot-deck" in g.index and g.loc[m, "tv"] > g.loc["hot-deck", "tv"]:
                    lines.append(f"survey {d} (a, calibration {cal}): {m} loses to hot-deck (TV "
                                 f"{g.loc[m, 'tv']:.3f} vs {g.loc['hot-deck', 'tv']:.3f})")
    return lines
