"""Sizes and settings of the fidelity benchmark (quick and full modes), ``--set`` overrides, and the models."""

from __future__ import annotations

from pathlib import Path

from popsim.embed import SentenceEncoder
from popsim.lm.hf import HFLanguageModel
from popsim.lm.loading import cache_dir

ROOT = Path(__file__).resolve().parents[2]  # the repository
DATA = ROOT.parent / "shared" / "data"
DESCRIPTION = "Fidelity on real data: the MoP paper's text table and survey fidelity, with the embedded LM."

TEXT_METHODS = ["mop", "no-persona", "persona-only", "uniform", "mop-no-exemplar", "mop-random-personas"]
TEXT_BASELINES = ["no-persona", "persona-only", "uniform"]
SURVEY_METHODS = ["mop", "uniform", "persona-only", "no-persona", "silicon"]
SURVEY_BASELINES_B = ["uniform", "persona-only", "no-persona", "silicon"]  # the best baseline of (b) and (c)

# Sizes. quick: 15-17 minutes on 2 fast CPU cores with native bf16 (AMD EPYC AVX-512 BF16 at 734 bf16
# GFLOP/s: 16.8 with cold survey caches, 15.6 warm; Xeon AMX 14.7; all before tiled tree attention), 18.8
# on a slower one of the same kind (413 GFLOP/s, `lm_throughput.py --quick`; 24.5 before tiling), 63 in
# fp32 (AMD EPYC, no AVX-512; before the per-dataset text jobs);
# full: larger K, N, samples (surveys: 800 respondents each, 240 held out; 1500 was estimated at ~3 h on 2
# cores from a small run of the full settings, and was never run). TRAINING holds the MoP training settings
# both modes share (tuned on --dev, see docs/experiments.md). Text keeps tau_k at tau_init (TEXT_TRAINING): the
# likelihood-optimal temperature (~1.1 on IMDB / SST-2 dev) samples worse texts than 0.9 (dev sweep, MoP,
# mean of the two: FID 0.727 at 0.9 vs 0.768 at 1.05, MAUVE 0.912 vs 0.893; SST-2's MAUVE alone prefers
# 1.05), so text learns only the gates; surveys learn tau (it rises from 0.6). Text calibrates the exemplar
# gate (calibrate_exemplars): the retrieval-started gate drew some exemplars for every context, and on dev the
# drawn exemplars' own texts matched the real ones worse than uniform draws (MAUVE over 10 draws, SST-2 /
# IMDB: 0.714 / 0.759 vs uniform 0.831 / 0.825; calibrated 0.814 / 0.860). quick text writes 128 texts per
# method (64 until 2026-12-02, `5d1e31c`: a 0.01 FID difference was inside the paired-bootstrap interval). The persona
# gate starts uniform in both parts: starting it from the personas' clusters (persona_gate_init="clusters",
# calibrate_personas) won dev text on seed 0 and lost on seeds 1 and 2, and lost dev survey (b) on both datasets.
# Surveys learn option offsets inside MoP's likelihood (learn_option_offsets, 2026-12-04: better raw MoP in
# 11 of 12 dev cells over three seeds); text has no answer options, so the setting does nothing there.
TRAINING = dict(top_m=4, learning_rate=0.003, tau_learning_rate=0.05, balance=1.0, gate_init_scale=30.0,
                pair_embedding="mean", calibrate_exemplars=False, persona_gate_init="uniform",
                calibrate_personas=False, check_personas=False, learn_option_offsets=True,
                offset_learning_rate=0.1)
TEXT_TRAINING = dict(TRAINING, tau_learning_rate=0.0, calibrate_exemplars=True)
# Survey calibration (2026-12-06, issue 31): every method, MoP and baselines alike, is scored raw and with the
# same post-hoc calibration (fidelity_suite/calibration.py: one sharpness per method and option offsets per
# answer scale, fitted from the method's own answers of `calibration_agents` training respondents outside MoP's
# exemplar pool); the headline compares calibrated with calibrated. MoP's internal offsets and learned tau stay
# part of MoP (the `ablation` switch measures them and the gate). Quick surveys went from 300 to 240 rows to pay
# for the third survey, protocol (c) and the calibration populations (22.7 min on an idle 2-core Xeon, 2026-12-07,
# with GSS and non-voters score caches warm). exemplar_asked (2026-12-07): protocol (a) fits show each agent its
# exemplar's answer to the asked question, one answer per transcript, with a calibrated exemplar gate (the shipped
# survey's settings); on dev, MoP's calibrated (a) TV 0.154 vs 0.198, lower on each survey (docs/experiments.md).
# exemplar_nearest (protocols, e.g. "bc"): those protocols' fits show, in place of the asked answer, the exemplar's
# answer to the most similar other seen item, on the asked item's scale (b) or on another scale (c).
# option_order (2026-12-07): how every method is shown the options (popsim.option_order), in the protocols of
# option_order_protocols; unlisted elsewhere. Shuffled for (c) only: on dev it lowered the LM methods' mean (c) TV
# at seeds 0 and 1 (0.308 -> 0.243, 0.313 -> 0.249) and hurt (b) on flying (docs/experiments.md).
# shares (2026-12-07): "expected" scores a simulated cell by the mean of its agents' answer distributions,
# "sampled" by one drawn answer per agent (fidelity_suite/expected.py); summaries keep both.
# item_split (0 = the reported split): another seeded choice of the items (b) and (c) hold out, same respondents,
# agents and settings; how much a verdict on new questions depends on which items were held out.
# calibration_transfer: protocols (b) and (c) choose each method's calibration sharpness on held-out seen items
# (one item, or one scale, at a time), as their new items will be calibrated (fidelity_suite/calibration.py).
SIZES = {
    "quick": {
        "text": dict(TEXT_TRAINING, n_train=300, n_real=160, n_gen=128, n_personas=4, n_exemplars=48,
                     max_train_records=24, epochs=1, batch_size=32, tau_init=0.9, max_words=32, max_new_tokens=32,
                     mauve_buckets=6, mauve_seeds=10, exemplar_turn=True),
        "survey": dict(TRAINING, max_rows=240, n_personas=3, n_exemplars=32, max_train_records=32, epochs=6,
                       batch_size=8, tau_init=0.6, val_fraction=0.15, mask_answered_b=False, exemplar_questions=4,
                       exemplar_cover_scales=False, max_order=1, n_boot=50, protocols="abc", calibrate=True,
                       calibration_agents=32, ablation=False, methods="", exemplar_asked=True, exemplar_nearest="bc",
                       calibration_transfer=False, shares="expected",
                       option_order="shuffled", option_order_protocols="c", item_split=0),
    },
    "full": {
        "text": dict(TEXT_TRAINING, n_train=2000, n_real=400, n_gen=200, n_personas=10, n_exemplars=200,
                     max_train_records=160, epochs=3, batch_size=32, tau_init=0.9, max_words=60, max_new_tokens=64,
                     mauve_buckets=20, mauve_seeds=10, exemplar_turn=True),
        "survey": dict(TRAINING, max_rows=800, n_personas=8, n_exemplars=200, max_train_records=256, epochs=6,
                       batch_size=16, tau_init=0.6, val_fraction=0.15, mask_answered_b=False, exemplar_questions=5,
                       exemplar_cover_scales=False, max_order=2, n_boot=200, protocols="abc", calibrate=True,
                       calibration_agents=160, ablation=False, methods="", exemplar_asked=True, exemplar_nearest="bc",
                       calibration_transfer=False, shares="expected",
                       option_order="shuffled", option_order_protocols="c", item_split=0),
    },
}


ESTIMATOR_KEYS = (*TRAINING, "n_exemplars", "tau_init", "epochs", "batch_size", "max_train_records", "val_fraction")


def estimator_settings(cfg: dict) -> dict:
    """The MixtureOfPersonas arguments a part's settings fix (both parts fit the same way)."""
    return {key: cfg[key] for key in ESTIMATOR_KEYS if key in cfg}


def settings(mode: str, overrides: list[str]) -> dict[str, dict]:
    """The sizes and settings of ``mode`` with ``part.key=value`` overrides (typed like the value they replace)."""
    cfg = {part: dict(v) for part, v in SIZES[mode].items()}
    for item in overrides:
        key, _, value = item.partition("=")
        part, _, name = key.partition(".")
        if part not in cfg:
            raise ValueError(f"--set {key}: the part is text or survey, as in text.tau_init=0.8")
        old = cfg[part].get(name)
        if isinstance(old, bool):
            if value.lower() not in {"true", "false", "1", "0"}:
                raise ValueError(f"--set {key}: give true or false, not {value!r}")
            cfg[part][name] = value.lower() in {"true", "1"}
        else:
            cfg[part][name] = type(old)(value) if old is not None and not isinstance(old, str) else value
    return cfg


def models(part: str, lm: str | None = None) -> tuple[HFLanguageModel, SentenceEncoder]:
    """The LM (the embedded default, or ``lm``: a name or folder as ``lm.name`` takes) and the encoder, the
    encoder caching into the part's (text / survey) embedding file."""
    model = HFLanguageModel() if lm is None else HFLanguageModel(lm)
    return model, SentenceEncoder(cache_path=cache_dir() / f"embeddings-{part}.sqlite")
