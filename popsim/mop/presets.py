"""Named MoP settings: ``tuned`` (the default: what won on dev data) and ``paper`` (the paper as published).

The paper fixes the objective and the gate's form but leaves initialisation, regularisation and step
sizes open. ``paper`` fills those gaps with the plainest choices (PyTorch's random initialisation, the
bare top-M likelihood, one step size); ``tuned`` holds the settings the fidelity benchmark adopted on its
dev splits (``docs/experiments.md`` records each decision). A scenario's ``mop.preset`` picks one and any
single ``mop.<key>`` overrides it; :class:`~popsim.mop.MixtureOfPersonas` resolves them at ``fit``.

This module is plain data (no torch), so the scenario schema can read it without loading the estimator.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PRESETS", "PRESET_KEYS", "resolve_preset"]

_PAPER: dict[str, Any] = {
    "tau_init": 0.6,              # the paper's initial temperature
    "tau_learning_rate": 0.003,   # one step size for projections and temperatures
    "balance": 0.0,               # the bare top-M likelihood
    "stickiness": 1.0,            # plain top-M at every step
    "gate_init_scale": 0.0,       # PyTorch's random initialisation
    "pair_embedding": "joint",    # h(x_j, y_j) of the joined text
    "calibrate_exemplars": False,
    "persona_gate_init": "uniform",
    "calibrate_personas": False,
    "check_personas": False,
    "learn_option_offsets": False,
}

_TUNED: dict[str, Any] = {
    **_PAPER,
    "tau_learning_rate": 0.05,    # tau_k is one number per persona: it needs its own, larger step
    "balance": 1.0,               # load balancing: keeps personas and exemplars in use
    "stickiness": 4.0,            # fewer near-tie swaps, fewer fresh LM scores
    "gate_init_scale": 30.0,      # exemplar gate starts as nearest-neighbour retrieval
    "pair_embedding": "mean",     # the exemplar's profile keeps its weight beside its answers
    "learn_option_offsets": True,  # surveys: train the gates against a debiased LM
}

# free text (reviews): the likelihood-optimal temperature samples worse texts than a fixed, cooler one,
# and a retrieval-started gate keeps drawing generic exemplars unless its prior is calibrated
_TUNED_FREE_TEXT: dict[str, Any] = {**_TUNED, "tau_init": 0.9, "tau_learning_rate": 0.0, "calibrate_exemplars": True}

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "paper": {"choice": _PAPER, "free_text": _PAPER},
    "tuned": {"choice": _TUNED, "free_text": _TUNED_FREE_TEXT},
}

PRESET_KEYS: tuple[str, ...] = tuple(_PAPER)


def resolve_preset(preset: str, *, free_text: bool, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The preset's settings for multiple-choice or free-text records, with ``overrides`` (those of its keys
    that are not None) on top."""
    if preset not in PRESETS:
        raise ValueError(f"unknown MoP preset {preset!r}; use one of: {', '.join(PRESETS)}")
    settings = dict(PRESETS[preset]["free_text" if free_text else "choice"])
    settings.update({k: v for k, v in (overrides or {}).items() if v is not None and k in settings})
    return settings
