"""The report's figures as PNG bytes: the long-tail plot and one small-multiples panel per question.

Colours are the Okabe-Ito palette (Okabe & Ito 2008), told apart under the common colour-vision
deficiencies; the real respondents are always black (a line) with a grey band, never a hue, so "real" reads
as the reference whatever the number of methods. Figures are drawn with matplotlib's Agg canvas (no GUI,
no global pyplot state) and written as palette PNGs to keep a self-contained report small.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Sequence

import numpy as np
import pandas as pd

from popsim.eval.answers import REAL

__all__ = ["OKABE_ITO", "method_colours", "longtail_png", "question_png"]

OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442"]
"""Okabe-Ito hues for methods, in order of use (black is kept for the real respondents)."""

_REAL_COLOUR, _BAND_COLOUR = "#000000", "#BBBBBB"
_DPI = 80
_PANEL_COLUMNS = 5


def method_colours(methods: Sequence[str]) -> dict[str, str]:
    """One Okabe-Ito colour per method, stable by position (the palette repeats after seven methods)."""
    return {m: OKABE_ITO[i % len(OKABE_ITO)] for i, m in enumerate(methods)}


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_DPI)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    """The figure as an 8-bit palette PNG: a third of the RGBA size, text and bars unchanged to the eye."""
    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    buf.seek(0)
    out = io.BytesIO()
    Image.open(buf).convert("RGB").quantize(colors=96).save(out, format="PNG", optimize=True)
    return out.getvalue()


def longtail_png(cells: pd.DataFrame, floor: pd.DataFrame, *, min_n: int, title: str) -> bytes:
    """Fidelity TV vs real cell size (log x), one series per method with CI bars, plus the noise floor."""
    fig = _figure(10, 5.5)
    ax = fig.subplots()
    ax.fill_between(floor["n"], floor["tv_low"], floor["tv_high"], color=_BAND_COLOUR, alpha=0.5, lw=0)
    ax.plot(floor["n"], floor["tv"], "k--", lw=1.4, label="noise floor: size-n real sample vs full real (95% band)")
    methods = list(dict.fromkeys(cells["method"]))
    colours = method_colours(methods)
    for i, method in enumerate(methods):
        c = cells[(cells["method"] == method) & ~cells["suppressed"] & cells["tv"].notna()]
        x = c["real_n"].to_numpy(float) * (1 + 0.04 * (i - (len(methods) - 1) / 2))  # jitter apart
        err = np.vstack([c["tv"] - c["tv_ci_low"], c["tv_ci_high"] - c["tv"]]).clip(min=0)
        ax.errorbar(x, c["tv"], yerr=err, fmt="os^Dv<>"[i % 7], ms=4, capsize=2, elinewidth=0.8, alpha=0.85,
                    color=colours[method], label=method)
    ax.axvline(min_n, color="#D55E00", ls=":", lw=1.2, label=f"not scored below {min_n} real respondents")
    ax.set_xscale("log")
    ax.set_xlabel("real respondents in the subgroup (log scale)")
    ax.set_ylabel("mean TV over questions (0-1, lower is better)")
    ax.set_ylim(bottom=0)
    ax.set_title(f"{title}: fidelity by subgroup size", fontsize=11)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def _group_title(group: str, n: int) -> str:
    name = "All respondents" if group == "all" else group.split("=", 1)[-1]
    return f"{textwrap.shorten(name, 22, placeholder='…')} (n={n})"


def _panel(ax, shares: pd.DataFrame, options: list[str], methods: list[str], colours: dict[str, str]) -> None:
    """Bars per option for each method; the real share as a black line over its grey 95% band."""
    x = np.arange(len(options))
    width = 0.8 / max(len(methods), 1)
    real = shares[shares["source"] == REAL].set_index("option").loc[options]
    for k in range(len(options)):
        lo, hi = 100 * real["band_low"].iloc[k], 100 * real["band_high"].iloc[k]
        ax.fill_between([x[k] - 0.45, x[k] + 0.45], lo, hi, color=_BAND_COLOUR, alpha=0.6, lw=0, zorder=1)
        ax.hlines([lo, hi], x[k] - 0.45, x[k] + 0.45, color="#666666", lw=0.7, zorder=3)  # seen over the bars too
    for i, method in enumerate(methods):
        s = shares[shares["source"] == method].set_index("option").loc[options, "share"].to_numpy(float)
        ax.bar(x - 0.4 + width * (i + 0.5), 100 * s, width * 0.92, color=colours[method], zorder=2)
    ax.hlines(100 * real["share"].to_numpy(float), x - 0.45, x + 0.45, color=_REAL_COLOUR, lw=2.2, zorder=3)
    wrap = max(5, 24 // max(len(options), 1))  # a panel is ~190 px wide: wrap labels so they never touch
    ax.set_xticks(x, [textwrap.fill(o, wrap, break_long_words=False) for o in options], fontsize=8.5)
    ax.tick_params(axis="y", labelsize=8.5)
    ax.grid(True, axis="y", alpha=0.3, zorder=0)
    ax.set_xlim(-0.55, len(options) - 0.45)


def question_png(shares: pd.DataFrame, question: str, options: Sequence[str], methods: Sequence[str], *,
                 by: str | None = None) -> bytes:
    """Small multiples for one question: the whole population, then each group of ``by`` with enough
    real respondents; y is the share of respondents choosing each option, in percent."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    options, methods = [str(o) for o in options], list(methods)
    q = shares[(shares["question"] == question) & ~shares["suppressed"]]
    groups = list(dict.fromkeys(q["group"]))
    ncols = min(max(len(groups), 1), _PANEL_COLUMNS)
    nrows = max(1, math.ceil(len(groups) / ncols))
    fig = _figure(13, 0.6 + 2.7 * nrows)  # 1040 px: the page's full width
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharey=True, squeeze=False)).ravel()
    colours = method_colours(methods)
    top = 100 * float(np.nanmax(np.r_[q["share"].to_numpy(float), q["band_high"].to_numpy(float), 0.1]))
    for ax, group in zip(axes, groups):
        g = q[q["group"] == group]
        _panel(ax, g, options, methods, colours)
        ax.set_title(_group_title(group, int(g.loc[g["source"] == REAL, "n"].iloc[0])), fontsize=10)
        ax.set_ylim(0, min(100, math.ceil(top / 10) * 10 + 5))
    for ax in axes[len(groups):]:
        ax.set_visible(False)
    if len(groups) == 0:
        axes[0].text(0.5, 0.5, "too few real respondents to compare", ha="center", va="center")
    axes[0].set_ylabel("% choosing the option", fontsize=9)
    handles = [Patch(color=colours[m], label=m) for m in methods]
    handles += [Line2D([], [], color=_REAL_COLOUR, lw=2.2, label="real respondents"),
                Patch(color=_BAND_COLOUR, alpha=0.6, label="95% band of the real share")]
    fig.legend(handles=handles, loc="upper center", ncol=len(handles), fontsize=9, frameon=False)
    fig.text(0.01, 0.995, question + (f", by {by}" if by else ""), ha="left", va="top", fontsize=10, color="#444444")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    return _png(fig)
