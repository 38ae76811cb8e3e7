"""The text part of the fidelity benchmark (paper Table 1 layout): fit MoP on a text dataset, generate the
same number of texts per method for the same held-out contexts and seeds, and score them against real texts."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from popsim.eval.metrics import conditional_fid, distinct_n, downstream_scores, fid, kl_cosine, mauve_score
from popsim.lm.base import Chat
from popsim.lm.loading import cache_dir
from popsim.mop import MixtureOfPersonas, PromptStyle, Records
from popsim.mop.personas import synthesize_personas
from popsim.sim.model import assign_mixture

from .config import TEXT_METHODS, estimator_settings
from .data import heldout_samples, load_text, sample_frame

# instruction + persona in the system message: won on dev for every persona method (SmolLM2 writes more like
# the real texts), at the price of following the persona less; the library default keeps the paper's user turn.
# exemplar_turn (the text settings, True): the exemplar is not quoted there but shown as the model's own
# earlier answer, which SmolLM2 imitates; won FID and MAUVE on dev for both exemplar methods (MoP, uniform)
TEXT_STYLE = PromptStyle(kind="chat", exemplar_intro="You have written", task_intro="Please write",
                         persona_in_system=True)


def task_prompt(context: str, style: PromptStyle) -> Chat:
    """The bare task prompt (no-persona baseline): exactly the task line of :func:`build_prompt`."""
    return Chat.of(style.task_intro + " " + context.strip() + ".")


def mean_mauve(real_emb: np.ndarray, emb: np.ndarray, cfg: dict) -> float:
    """MAUVE averaged over ``mauve_seeds`` k-means quantisations: with 6 buckets on ~200 points one
    quantisation's MAUVE has a standard deviation of 0.05-0.19 across seeds (IMDB / SST-2 dev)."""
    return float(np.mean([mauve_score(real_emb, emb, seed=s, num_buckets=cfg["mauve_buckets"])
                          for s in range(cfg["mauve_seeds"])]))


def fit_text_mop(name: str, cfg: dict, lm, encoder, *, dev: bool, seed: int):
    """One text dataset's MoP fit on a sample of its train split; returns (mop, that sample, real, gen_ctx,
    real_self), the last three the held-out samples of :func:`heldout_samples` (dev split when ``dev``)."""
    splits = load_text(name, cfg["max_words"], seed)
    train = sample_frame(splits["train"], cfg["n_train"], seed)
    real, gen_ctx, real_self = heldout_samples(splits["dev" if dev else "test"], cfg, seed)
    records = Records(list(train["context"]), list(train["text"]))
    style = replace(TEXT_STYLE, instruction=cfg.get("instruction", TEXT_STYLE.instruction),
                    exemplar_turn=cfg["exemplar_turn"])
    mop = MixtureOfPersonas(lm, encoder, n_personas=cfg["n_personas"], **estimator_settings(cfg), style=style,
                            cache_path=cache_dir() / "scores-text.sqlite", random_state=seed, verbose=False)
    return mop.fit(records), train, real, gen_ctx, real_self


def fit_text_models(name: str, cfg: dict, lm, encoder, *, dev: bool, seed: int, log,
                    save_dir: Path | None = None):
    """One text dataset's fits: MoP and the random-persona ablation (personas summarised from random partitions
    of the same exemplar pool, no K-means); saved under ``save_dir`` (``mop``, ``mop-random``) when given, so
    that each method's generation can run as its own job. Returns (mop, mop_rand)."""
    t0 = time.perf_counter()
    mop, train, _, _, _ = fit_text_mop(name, cfg, lm, encoder, dev=dev, seed=seed)
    rand_emb = np.random.default_rng(seed + 7).normal(size=(len(mop.exemplars_), 8))
    rand_personas, _ = synthesize_personas(mop.exemplars_.texts, rand_emb, n_personas=cfg["n_personas"], lm=lm,
                                           seed=seed)
    mop_rand = MixtureOfPersonas(**dict(mop.get_params(), personas=[p.text for p in rand_personas]))
    mop_rand.fit(Records(list(train["context"]), list(train["text"])), mop.exemplars_)
    log(f"[{name}] fitted MoP + random-persona ablation in {time.perf_counter() - t0:.0f} s; "
        f"tau={np.round(mop.temperatures_, 3).tolist()}; personas: {[p.text[:60] for p in mop.personas_]}")
    if save_dir is not None:
        mop.save(save_dir / "mop")
        mop_rand.save(save_dir / "mop-random")
    return mop, mop_rand


def load_text_models(save_dir: Path, lm, encoder):
    """The (mop, mop_rand) that :func:`fit_text_models` saved."""
    return tuple(MixtureOfPersonas.load(save_dir / part, lm=lm, encoder=encoder) for part in ("mop", "mop-random"))


def heldout_texts(name: str, cfg: dict, *, dev: bool, seed: int):
    """(real, gen_ctx, real_self): the held-out samples every method is scored on (:func:`heldout_samples`)."""
    splits = load_text(name, cfg["max_words"], seed)
    return heldout_samples(splits["dev" if dev else "test"], cfg, seed)


def generate_method(name: str, method: str, mop, mop_rand, cfg: dict, lm, encoder, *, dev: bool, seed: int,
                    log) -> tuple[dict, list[dict]]:
    """One method's ``n_gen`` texts for the held-out contexts, scored against the real held-out texts: (its
    table row, its samples). Every method gets the same contexts, per-text seeds and sampling temperature."""
    t = time.perf_counter()
    real, gen_ctx, _ = heldout_texts(name, cfg, dev=dev, seed=seed)
    style = mop.style_
    contexts = list(gen_ctx["context"])
    seeds = [seed * 100_003 + i for i in range(len(contexts))]
    rng = np.random.default_rng(seed)
    model = mop_rand if method == "mop-random-personas" else mop
    if method in {"mop-no-exemplar", "mop-random-personas"}:
        draw = model.sample(contexts, rng)
        if method == "mop-no-exemplar":
            draw["exemplar"] = np.full(len(contexts), -1)
    else:
        # every method samples at the same temperature: the baselines at MoP's (fixed) tau_init, not 1.0
        draw = assign_mixture(method, mop, contexts, rng, tau_default=cfg["tau_init"])
    prompts = []
    for k, j, c in zip(draw["persona"], draw["exemplar"], contexts, strict=True):
        prompts.append(task_prompt(c, style) if k < 0 and j < 0 else
                       model.prompt(None if k < 0 else int(k), None if j < 0 else int(j), c))
    texts = lm.generate(prompts, max_new_tokens=cfg["max_new_tokens"],
                        temperature=[float(x) for x in draw["temperature"]], seed=seeds)
    texts = [" ".join(x.split()) or "." for x in texts]
    row = scored_row(name, method, real, texts, list(gen_ctx["label"]), encoder, cfg, seed)
    row["seconds"] = time.perf_counter() - t
    samples = [{"context": c, "persona": int(k), "exemplar": int(j), "tau": float(tau), "text": x}
               for c, k, j, tau, x in zip(contexts, draw["persona"], draw["exemplar"], draw["temperature"], texts,
                                          strict=True)]
    log(f"[{name}] {method:>20}: FID {row['fid']:.3f} MAUVE {row['mauve']:.3f} KL-cos {row['kl_cos']:.3f} "
        f"per-label FID {row['label_fid']:.3f} acc {row['accuracy']:.3f} ({row['seconds']:.0f} s)")
    return row, samples


def scored_row(name: str, method: str, real: pd.DataFrame, texts: list[str], labels: list, encoder, cfg: dict,
               seed: int) -> dict:
    """One row of the text tables: ``texts`` (written for ``labels``) scored against the real held-out texts
    ``real``, which are also the downstream classifier's test set."""
    real_emb, test_lab, emb = encoder.encode(list(real["text"])), list(real["label"]), encoder.encode(texts)
    ds = downstream_scores(emb, labels, real_emb, test_lab, seed=seed)
    return {"dataset": name, "method": method, "fid": fid(real_emb, emb), "mauve": mean_mauve(real_emb, emb, cfg),
            "kl_cos": kl_cosine(real_emb, emb, seed=seed),
            "label_fid": conditional_fid(real_emb, test_lab, emb, labels), "distinct2": distinct_n(texts, 2),
            "accuracy": ds["accuracy"], "macro_f1": ds["macro_f1"],
            "mean_words": float(np.mean([len(x.split()) for x in texts])), "seconds": 0.0}


def real_row(name: str, cfg: dict, encoder, *, dev: bool, seed: int) -> dict:
    """The real-vs-real row: a second held-out sample scored like a method (the floor every metric can reach)."""
    real, _, real_self = heldout_texts(name, cfg, dev=dev, seed=seed)
    texts = list(real_self["text"])
    return scored_row(name, "real (held-out sample)", real, texts, list(real_self["label"]), encoder, cfg, seed)


def fit_summary(mop, mop_rand) -> dict:
    """What the samples file records about a dataset's fits (plain data, so a fit job can return it)."""
    return {"personas": [p.text for p in mop.personas_], "random_personas": [p.text for p in mop_rand.personas_],
            "tau": mop.temperatures_.tolist(), "fit": mop.fit_info_}


def write_samples(name: str, dev: bool, fits: dict, samples: dict[str, list[dict]]) -> None:
    """The generated texts with the data's contexts (and :func:`fit_summary`), kept out of the repository
    (popsim's cache folder)."""
    samples_dir = cache_dir() / "fidelity-samples"
    samples_dir.mkdir(parents=True, exist_ok=True)
    (samples_dir / f"text-{name}{'-dev' if dev else ''}-samples.json").write_text(json.dumps(
        {**fits, "samples": samples}, indent=1, default=str))


def text_benchmark(name: str, cfg: dict, lm, encoder, *, dev: bool, seed: int, log) -> pd.DataFrame:
    """One text dataset in one process: fit, every method's texts, the real-vs-real row (one row per method).
    The command line runs the same pieces as separate jobs (``cli``)."""
    mop, mop_rand = fit_text_models(name, cfg, lm, encoder, dev=dev, seed=seed, log=log)
    done = {m: generate_method(name, m, mop, mop_rand, cfg, lm, encoder, dev=dev, seed=seed, log=log)
            for m in TEXT_METHODS}
    write_samples(name, dev, fit_summary(mop, mop_rand), {m: samples for m, (_, samples) in done.items()})
    return pd.DataFrame([row for row, _ in done.values()] + [real_row(name, cfg, encoder, dev=dev, seed=seed)])
