"""Mixture of Personas: prompts, personas, gates, training and the estimator.

Names load on first use, so that plain-data parts (``popsim.mop.presets``, read by the scenario schema)
import without torch.
"""

from importlib import import_module
from typing import Any

_HOMES = {
    "MixtureGate": "gating", "MixtureOfPersonas": "model", "Persona": "personas",
    "synthesize_personas": "personas", "user_personas": "personas", "PromptStyle": "prompts",
    "build_prompt": "prompts", "ScoreCache": "scoring",
    "pair_log_likelihood": "scoring", "PRESETS": "presets",
}

__all__ = [*_HOMES, "Records", "ExemplarPool"]


def __getattr__(name: str) -> Any:
    if name in ("Records", "ExemplarPool"):  # the data they hold is built below MoP, in popsim.data
        return getattr(import_module("popsim.records"), name)
    if name not in _HOMES:
        raise AttributeError(f"module 'popsim.mop' has no attribute {name!r}")
    return getattr(import_module(f"popsim.mop.{_HOMES[name]}"), name)
