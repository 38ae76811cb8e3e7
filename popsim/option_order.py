"""How a multiple-choice question's options are shown: the one option-order setting (``simulation.option_order``).

Why: a small LM's choice leans on which option wording it reads first (SmolLM2 puts ~1.0 on the first-named
option of a GSS spending item when the options are named in the question; REFERENCE.md), and that lean
does not depend on the person simulated. Listing the options in an order drawn per agent spreads the lean
over all options instead of piling it on one (Dominguez-Olmedo et al. 2023); averaging the option
probabilities of the forward and reversed listing cancels a first- vs last-position lean within each
answer. Neither needs real answers, so both work on new questions and new answer scales, where learned
option offsets have nothing to transfer.

Modes:
    ``unlisted``: the question as written, options not listed (the LM scores each option's wording after
        "A:"); the default.
    ``listed``: an "Options:" line in the questionnaire's order.
    ``shuffled``: an "Options:" line in an order drawn per (agent, question) from the run's seed.
    ``averaged``: the forward and the reversed listing, option probabilities averaged.

Whatever the order shown, probabilities and answers always refer to the questionnaire's options, so
shares, offsets and reports never see an order.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Literal, get_args

import numpy as np

__all__ = ["Order", "OptionOrder", "OPTION_ORDERS", "orders_for", "options_line", "order_text"]

OptionOrder = Literal["unlisted", "listed", "shuffled", "averaged"]
OPTION_ORDERS: tuple[str, ...] = get_args(OptionOrder)

Order = tuple[int, ...]  # positions into the questionnaire's options, in the order shown


def orders_for(mode: str, n_options: int, *, seed: int, who: int | str, question: str) -> list[Order | None]:
    """The option orders one person is shown for one question: one order, or two whose probabilities are averaged.

    ``None`` means the options are not listed. ``shuffled`` draws from a stream keyed by (seed, who, question)
    alone, so an agent's order never depends on which other agents or questions share its batch or run.
    """
    if mode == "unlisted" or n_options == 0:
        return [None]
    forward = tuple(range(n_options))
    if mode == "listed":
        return [forward]
    if mode == "averaged":
        return [forward, forward[::-1]]
    if mode == "shuffled":
        who_key = who if isinstance(who, int) else zlib.crc32(str(who).encode())
        rng = np.random.default_rng(np.random.SeedSequence([seed, 7, who_key, zlib.crc32(question.encode())]))
        return [tuple(int(i) for i in rng.permutation(n_options))]
    raise ValueError(f"option order must be one of {', '.join(OPTION_ORDERS)}; got {mode!r}")


def options_line(labels: Sequence[str], order: Order | None) -> str:
    """The line listing ``labels`` in ``order`` ("" when unlisted), e.g. "Options: too little / about right"."""
    if order is None:
        return ""
    return "Options: " + " / ".join(labels[i] for i in order)


def order_text(orders: Sequence[Order | None]) -> str | None:
    """How an answer's orders are recorded in ``responses.parquet``: "2 0 1", forward and reversed joined by
    " | ", or ``None`` when the options were not listed."""
    shown = [" ".join(str(i) for i in o) for o in orders if o is not None]
    return " | ".join(shown) or None
