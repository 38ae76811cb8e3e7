"""Shared pieces of the benchmark scripts: timing, machine facts, and a real GSS survey workload.

The survey workload is the shipped ``scenarios/survey.yaml`` (GSS 2018 spending items, answer codes
mapped to their wording): agents get real respondents' profiles, a persona and a real respondent's
answer transcript as exemplar, exactly as ``popsim run`` builds them, without fitting a gate (the gate
does not change what the LM has to compute, only which persona/exemplar each agent holds).
"""

from __future__ import annotations

import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
try:
    import popsim  # noqa: F401
except ModuleNotFoundError:  # run from a checkout without installing: use the repository root
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from popsim.config import Scenario, load_scenario  # noqa: E402
from popsim.data import Population, load_population, profile_text, survey_exemplars  # noqa: E402
from popsim.lm.base import LanguageModel  # noqa: E402
from popsim.mop import MixtureOfPersonas, PromptStyle  # noqa: E402
from popsim.mop.personas import user_personas  # noqa: E402

# Persona descriptions of the length and kind the LM summariser writes for GSS clusters (~40 tokens).
PERSONAS = [
    "A retired union electrician in his late sixties from Ohio who votes Democrat, worries about Social "
    "Security and thinks the country spends too little on roads, bridges and public schools.",
    "A young college-educated woman in a coastal city, politically independent, who cares most about the "
    "environment, science and health care and distrusts spending on the military.",
    "A small-business owner in Texas in her fifties, a Republican, who believes taxes are too high, welfare "
    "is wasteful and the police and the military deserve more money.",
    "A Black middle-aged bus driver from Atlanta, a Democrat, who wants more money for education, health, "
    "mass transit and programs that help poor families.",
    "A rural farmer in his forties from Iowa with a high-school degree who leans Republican, supports farm "
    "programs and highways and thinks foreign aid is far too generous.",
    "A Hispanic nurse in her thirties from California, moderate, who sees the need for more spending on "
    "health, childcare and drug rehabilitation every day at work.",
]


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def median_time(fn: Callable[[], object], reps: int) -> float:
    return statistics.median(timed(fn) for _ in range(reps))


def load_average() -> str:
    """1-minute load average: well above the core count means other work shares the CPUs."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "n/a"


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def survey_scenario(**overrides) -> Scenario:
    return load_scenario(ROOT / "scenarios" / "survey.yaml", overrides)


def survey_workload(lm: LanguageModel, encoder, n_agents: int, *, n_exemplar_questions: int = 5,
                    seed: int = 0) -> tuple[Scenario, Population, MixtureOfPersonas, pd.DataFrame, list[str]]:
    """The survey scenario with an unfitted MoP holding personas and real exemplars, plus agent profiles.

    Agents use the ``uniform`` method (persona and exemplar uniform), which needs personas and an
    exemplar pool but no gate: the LM work per agent is the same as for a fitted mixture.
    """
    scenario = survey_scenario(seed=seed)
    population = load_population(scenario)
    mop = MixtureOfPersonas(lm, encoder, style=PromptStyle.survey())
    mop.style_ = PromptStyle.survey()
    mop.personas_ = user_personas(PERSONAS)
    mop.exemplars_ = survey_exemplars(population, 64, n_questions=n_exemplar_questions, seed=seed)
    rng = np.random.default_rng(seed)
    rows = population.test.iloc[rng.choice(len(population.test), size=n_agents, replace=n_agents > len(
        population.test))].reset_index(drop=True)
    profiles = rows[[f"attr_{a}" for a in population.attributes]].copy()
    texts = [profile_text(r, population.attributes) for _, r in rows.iterrows()]
    return scenario, population, mop, profiles, texts
