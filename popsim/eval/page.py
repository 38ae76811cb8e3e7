"""Render a report as one self-contained HTML page and as Markdown with the same content.

A report is a title, the synthetic-output banner and a list of :class:`Section` objects, each a sequence of
blocks: a paragraph (``str``), a bullet list (``tuple`` of ``str``), a :class:`Table` or a :class:`Figure`.
The survey report builds its sections in :mod:`popsim.eval.report`; other kinds of runs (review runs, once
they are scored against real texts) add their own sections and reuse this renderer unchanged.

HTML: images are embedded as data URIs (the page opens from an e-mail), every image has alt text, tables
wrap instead of scrolling (no horizontal scroll at 1280 px), long tables are collapsed in ``<details>``.
Markdown: images are the PNG files written beside ``report.md``, under the names the figures carry.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

__all__ = ["MAX_OPEN_ROWS", "Table", "Figure", "Section", "Block", "render_html", "render_markdown", "anchor"]

MAX_OPEN_ROWS = 12
"""Tables longer than this are collapsed (HTML ``<details>``): the summary must fit on one screen."""

_SNAKE = re.compile(r"[a-z0-9]+(?:_[a-z0-9]+)+")


@dataclass(frozen=True)
class Table:
    """A table for people: column names in words (with units), values already formatted as text.

    ``csv`` is the relative path of the full table, linked under it. A header that looks like a code name
    (``snake_case``) is refused: readers should never have to decode column names.
    """

    frame: pd.DataFrame
    caption: str = ""
    csv: str | None = None
    collapse: bool | None = None  # None: collapse when longer than MAX_OPEN_ROWS

    def __post_init__(self) -> None:
        raw = [str(c) for c in self.frame.columns if _SNAKE.fullmatch(str(c))]
        if raw:
            raise ValueError(f"table columns {raw} are code names; give them names in words with units")

    @property
    def collapsed(self) -> bool:
        return len(self.frame) > MAX_OPEN_ROWS if self.collapse is None else self.collapse


@dataclass(frozen=True)
class Figure:
    """A PNG figure: ``file`` is its name beside report.md; ``alt`` says what it shows, for screen readers."""

    id: str
    png: bytes
    alt: str
    file: str
    heading: str = ""
    caption: str = ""
    attrs: dict[str, str] = field(default_factory=dict)  # extra HTML attributes, e.g. data-question

    def __post_init__(self) -> None:
        if not self.alt.strip():
            raise ValueError(f"figure {self.id!r} has no alt text; say what it shows")


Block = str | tuple | Table | Figure


@dataclass(frozen=True)
class Section:
    """A titled part of the report (``id`` is its HTML anchor) made of blocks, rendered in order."""

    id: str
    title: str
    blocks: Sequence[Block]


def anchor(text: str) -> str:
    """An HTML id from any text (question ids may hold characters ids cannot)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", str(text)).strip("-") or "x"


_CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5rem auto;max-width:1100px;
color:#1b1b1b;background:#fff;padding:0 1rem;line-height:1.4}
h1{font-size:1.6rem;margin:.4rem 0 .6rem}h2{font-size:1.25rem;margin:1.6rem 0 .5rem;border-bottom:1px solid #ddd}
h3{font-size:1rem;margin:1.2rem 0 .3rem}
.banner{background:#fff3cd;border:2px solid #b58100;color:#5c4200;padding:.6rem 1rem;font-weight:600;
border-radius:6px;margin-bottom:.8rem}
table{border-collapse:collapse;margin:.4rem 0 .8rem;font-size:.88rem;max-width:100%}
th,td{border:1px solid #ccc;padding:.22rem .5rem;text-align:left;vertical-align:top;overflow-wrap:break-word}
th{background:#eef2f7;font-weight:600}
caption{caption-side:top;text-align:left;font-weight:600;padding:.2rem 0}
td.num{text-align:right;white-space:nowrap}
img{max-width:100%;height:auto;border:1px solid #ddd}
figure{margin:.4rem 0 1.2rem}figcaption{color:#444;font-size:.9rem}
details{margin:.4rem 0 1rem}summary{cursor:pointer;color:#0b4f8a}
.small{color:#555;font-size:.85rem}
"""

_NUMERIC = re.compile(r"[-–+]?[\d.]+(?:[–-][\d.]+)?x?%?|–")


def _table_html(t: Table) -> str:
    e = html.escape
    head = "".join(f'<th scope="col">{e(str(c))}</th>' for c in t.frame.columns)
    body = []
    for row in t.frame.itertuples(index=False, name=None):
        cells = "".join(f'<td class="num">{e(str(v))}</td>' if _NUMERIC.fullmatch(str(v)) else f"<td>{e(str(v))}</td>"
                        for v in row)
        body.append(f"<tr>{cells}</tr>")
    caption = f"<caption>{e(t.caption)}</caption>" if t.caption and not t.collapsed else ""
    table = f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    link = f'<p class="small">Full table: <a href="{e(t.csv)}">{e(t.csv)}</a></p>' if t.csv else ""
    if t.collapsed:
        label = t.caption or "Table"
        return f"<details><summary>{e(label)} ({len(t.frame)} rows)</summary>{table}</details>{link}"
    return table + link


def _figure_html(f: Figure) -> str:
    e = html.escape
    uri = "data:image/png;base64," + base64.b64encode(f.png).decode("ascii")
    attrs = "".join(f' {k}="{e(v)}"' for k, v in f.attrs.items())
    heading = f"<h3>{e(f.heading)}</h3>" if f.heading else ""
    caption = f"<figcaption>{e(f.caption)}</figcaption>" if f.caption else ""
    return f'<figure class="panel" id="{e(f.id)}"{attrs}>{heading}<img alt="{e(f.alt)}" src="{uri}">{caption}</figure>'


def _block_html(b: Block) -> str:
    if isinstance(b, Table):
        return _table_html(b)
    if isinstance(b, Figure):
        return _figure_html(b)
    if isinstance(b, tuple):
        return "<ul>" + "".join(f"<li>{html.escape(str(x))}</li>" for x in b) + "</ul>"
    return f"<p>{html.escape(b)}</p>"


def render_html(title: str, banner: str, sections: Sequence[Section], *, files: Sequence[str] = ()) -> str:
    """One self-contained HTML page: banner, title, then the sections in order; ``files`` are linked last."""
    e = html.escape
    parts = [f'<section id="{e(s.id)}"><h2>{e(s.title)}</h2>' + "\n".join(map(_block_html, s.blocks)) + "</section>"
             for s in sections]
    links = ", ".join(f'<a href="{e(f)}">{e(f)}</a>' for f in files)
    footer = f'<p class="small" id="files">Files beside this page: {links}.</p>' if files else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{e(title)}</title><style>{_CSS}</style></head>
<body>
<div class="banner" id="synthetic-banner" role="note">{e(banner)}</div>
<h1>{e(title)}</h1>
{chr(10).join(parts)}
{footer}
</body></html>
"""


def _md_cell(v: object) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def _table_md(t: Table) -> str:
    cols = [_md_cell(c) for c in t.frame.columns]
    lines = [f"**{t.caption}**\n" if t.caption else "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in t.frame.itertuples(index=False, name=None)]
    if t.csv:
        lines.append(f"\nFull table: [{t.csv}]({t.csv})")
    return "\n".join(x for x in lines if x) + "\n"


def _block_md(b: Block) -> str:
    if isinstance(b, Table):
        return _table_md(b)
    if isinstance(b, Figure):
        alt = b.alt.replace("[", "(").replace("]", ")")
        head = f"### {b.heading}\n\n" if b.heading else ""
        return f"{head}![{alt}]({b.file})\n" + (f"\n{b.caption}\n" if b.caption else "")
    if isinstance(b, tuple):
        return "\n".join(f"- {x}" for x in b) + "\n"
    return f"{b}\n"


def render_markdown(title: str, banner: str, sections: Sequence[Section], *, files: Sequence[str] = ()) -> str:
    """The same report as Markdown; figures point at the PNG files named by each :class:`Figure`."""
    parts = [f"# {title}\n", f"> **{banner}**\n"]
    for s in sections:
        parts.append(f"## {s.title}\n")
        parts += [_block_md(b) for b in s.blocks]
    if files:
        parts.append("Files beside this page: " + ", ".join(f"[{f}]({f})" for f in files) + ".\n")
    return "\n".join(parts)
