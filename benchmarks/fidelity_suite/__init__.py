"""Fidelity on real data: the MoP paper's text table and survey fidelity, with the embedded LM.

1. **Text** (paper Table 1 layout) on IMDB, AG News and SST-2 (``../shared/data``): fit MoP on the train
   split, generate the same number of texts per method for the same held-out contexts (rating / topic +
   headline / sentiment instruction) with the same per-text seeds, and score them against real held-out
   texts: FID, MAUVE, KL-cosine (MiniLM sentence embeddings), distinct-2, and train-on-synthetic /
   test-on-real accuracy and macro F1. Methods: MoP, no-persona (bare task prompt), persona-only (uniform
   persona, no exemplar), uniform mixture (uniform persona + exemplar), and the paper's ablations: MoP
   without exemplars (persona ~ pi(x), tau_k, no exemplar) and MoP with random personas (personas
   summarised from random, not K-means, partitions of the exemplar pool; gates trained as usual).
2. **Survey** on GSS 2018 spending, FiveThirtyEight non-voters (weighted) and FiveThirtyEight flying etiquette
   (five answer scales), per-subgroup TV and representativeness with bootstrap CIs, the real-vs-real noise
   floor and the long-tail curve, under
   (a) new people: 70/30 split by respondent, fit on the 70, simulate as many agents as the 30 (drawn by
   weight); plus the hot-deck reference (copy a random training respondent of the same race x party /
   race x voter category / gender x age);
   (b) new questions: a third of the items held out entirely (never in fitting records or exemplar
   transcripts); agents answer only those; plus the no-LM ``stand-in-shares`` reference (each held-out item
   answered from the real shares of its most similar seen item: what copying a neighbour's answer gives);
   (c) new questions on a new answer scale: whole answer scales held out (``split_scales``; GSS has one
   scale and skips it).
   Every method is scored raw and with the same post-hoc calibration (``calibration``: a learned sharpness
   per method and option offsets per answer scale, from the method's own answers of training respondents);
   ``--ablation`` adds MoP with a uniform gate, without its internal offsets and with tau fixed, on the same
   fit. Cells are scored on expected shares (the mean of the agents' answer distributions) and, beside, on one
   sampled answer per agent. ``HELD_OUT_SURVEY`` (FiveThirtyEight masculinity) is never tuned on: ``--surveys
   masculinity`` on the test split only, the final new-survey check.

    python benchmarks/fidelity.py --quick            # 19.3 min on 2 bf16 Xeon cores (2026-12-07, caches part warm)
    python benchmarks/fidelity.py                    # full sizes (2 bf16 cores: text part 18 min, survey part 55-85)
    python benchmarks/fidelity.py --quick --dev      # tuning: dev splits only (never the reported test)
    python benchmarks/fidelity.py --quick --only text --set text.tau_init=0.8

Ends with ``RESULT fid_mop=.. fid_best_baseline=.. mauve_mop=.. mauve_best_baseline=.. tv_mop=..
tv_best_baseline=.. tv_noise=.. tv_mop_a=.. tv_hotdeck_a=.. tv_mop_c=.. tv_best_baseline_c=..`` and one pair
``tv_mop_<survey>= tv_best_baseline_<survey>=`` per survey (means over the datasets run; tv = mean question-TV
over the population and every single-attribute subgroup, on expected shares; tv_noise = the perfect simulator's
floor for sampled answers; tv_mop / tv_best_baseline / tv_noise and the per-survey pairs from protocol (b),
*_a from (a), *_c from (c); every survey key under the same calibration, post-hoc unless ``--set
survey.calibrate=false``; best baseline = best by that metric among the non-MoP methods).

The package's modules: ``config`` (sizes and settings of both modes, ``--set`` overrides, the models), ``data``
(text datasets and splits, the surveys, item splits, agents), ``text`` and ``survey`` (the two parts), ``report``
(markdown tables, verdicts), ``cli`` (the command line) and ``analysis`` (dev fits and what-if scoring for the
experiments in ``benchmarks/experiments/``). The names below are its public API.
"""

from .analysis import analysis_setup, attribute_tv, dev_survey_fits, dev_text_fits, raw_and_posthoc_tv
from .calibration import Calibration, calibrated, calibration_rows, fit_calibration, redraw
from .cli import main
from .config import (
    DATA,
    ROOT,
    SIZES,
    SURVEY_BASELINES_B,
    SURVEY_METHODS,
    TEXT_BASELINES,
    TEXT_METHODS,
    TEXT_TRAINING,
    TRAINING,
    estimator_settings,
    models,
    settings,
)
from .data import (
    HELD_OUT_SURVEY,
    SURVEYS,
    agent_rows,
    flying_scenario,
    heldout_samples,
    load_survey,
    load_text,
    nonvoters_scenario,
    sample_frame,
    split_items,
    split_scales,
)
from .report import md_table, survey_tables, text_tables, verdicts
from .survey import (
    fit_survey_mop,
    population_model,
    protocol_items,
    question_shares,
    real_answers,
    simulate,
    summarise_cells,
    survey_benchmark,
    wide_with_attributes,
)
from .text import TEXT_STYLE, fit_text_mop, mean_mauve, task_prompt, text_benchmark

__all__ = [
    "Calibration", "HELD_OUT_SURVEY", "calibrated", "calibration_rows", "fit_calibration", "flying_scenario",
    "protocol_items", "split_scales",
    "DATA", "ROOT", "SIZES", "SURVEYS", "SURVEY_BASELINES_B", "SURVEY_METHODS", "TEXT_BASELINES", "TEXT_METHODS",
    "TEXT_STYLE", "TEXT_TRAINING", "TRAINING",
    "agent_rows", "analysis_setup", "attribute_tv", "dev_survey_fits", "dev_text_fits", "estimator_settings",
    "fit_survey_mop", "fit_text_mop", "heldout_samples", "load_survey", "load_text", "main", "md_table",
    "mean_mauve", "models", "nonvoters_scenario", "population_model", "question_shares", "raw_and_posthoc_tv",
    "real_answers", "redraw", "sample_frame", "settings", "simulate", "split_items", "summarise_cells",
    "survey_benchmark", "survey_tables", "task_prompt", "text_benchmark", "text_tables", "verdicts",
    "wide_with_attributes",
]
