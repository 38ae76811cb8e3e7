"""Mixture of Personas: prompts, personas, gates, training and the estimator."""

from popsim.mop.gating import MixtureGate
from popsim.mop.model import MixtureOfPersonas
from popsim.mop.personas import Persona, synthesize_personas, user_personas
from popsim.mop.prompts import PromptStyle, build_prompt
from popsim.mop.records import ExemplarPool, Records
from popsim.mop.scoring import ScoreCache, pair_log_likelihood

__all__ = [
    "MixtureGate", "MixtureOfPersonas", "Persona", "synthesize_personas", "user_personas", "PromptStyle",
    "build_prompt", "ExemplarPool", "Records", "ScoreCache", "pair_log_likelihood",
]
