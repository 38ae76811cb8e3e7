"""Fit MoP on real IMDB reviews with the embedded LM; report held-out log-likelihood per token.

Issue 3's real-data check: K=20 personas and N=500 exemplars from ../shared/data/imdb-reviews-ratings
(train split; context = the rating instruction "a movie you rate R/10"), then per-token held-out
log-likelihood for MoP vs the uniform mixture vs no persona/no exemplar, the training time, and the share
of LM scorings the sketch cache saved. The fitted model is saved, reloaded, and sampled.

    python benchmarks/imdb_mop.py [--quick]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from popsim.embed import SentenceEncoder
from popsim.lm.hf import HFLanguageModel
from popsim.mop import MixtureOfPersonas, PromptStyle, Records

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "imdb-reviews-ratings"


def load(split: str, n: int, max_words: int, seed: int) -> Records:
    frame = pd.read_csv(DATA / f"imdb_{split}_sample2500.csv").sample(n, random_state=seed)
    texts = frame["text"].str.replace("<br />", " ", regex=False).str.split().str[:max_words].str.join(" ")
    contexts = [f"a movie you rate {r}/10" for r in frame["rating"]]
    return Records(contexts, list(texts), attributes=pd.DataFrame({"rating": frame["rating"].to_numpy()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (K=6, N=100)")
    args = parser.parse_args()
    k, n_ex, n_train, n_test, max_records = (6, 100, 400, 20, 48) if args.quick else (20, 500, 1500, 40, 160)
    train, test = load("train", n_train, 60, 0), load("test", n_test, 60, 1)
    lm, encoder = HFLanguageModel(), SentenceEncoder()
    model = MixtureOfPersonas(lm, encoder, n_personas=k, n_exemplars=n_ex, epochs=3, max_train_records=max_records,
                              style=PromptStyle.reviews(), random_state=0)
    t0 = time.perf_counter()
    model.fit(train)
    fit_seconds = time.perf_counter() - t0
    info = model.fit_info_
    print(f"fit: K={k} N={n_ex} records={info['n_records']} in {fit_seconds:.0f} s; "
          f"LM scorings {info['cache_misses']}, served from cache {info['cache_hits']} "
          f"({info['cache_hit_rate']:.0%} saved)")
    print("personas:", sum(p.source == "lm" for p in model.personas_), "from the LM,",
          sum(p.source == "fallback" for p in model.personas_), "fallback")
    results = {}
    for method in ("mop", "uniform", "no_persona"):
        ll, n_tok = model.log_likelihood(test, method=method, n_samples=4)
        results[method] = float(ll.sum() / n_tok.sum())
        print(f"held-out log-likelihood per token, {method:>10}: {results[method]:.4f}")
    with tempfile.TemporaryDirectory() as tmp:
        model.save(tmp)
        again = MixtureOfPersonas.load(tmp, lm=lm, encoder=encoder)
        draw = again.sample(test.contexts[:5], np.random.default_rng(0))
        print("reloaded and sampled personas", draw["persona"].tolist(), "exemplars", draw["exemplar"].tolist())
    print(f"RESULT ll_mop={results['mop']:.4f} ll_uniform={results['uniform']:.4f} "
          f"ll_no_persona={results['no_persona']:.4f} fit_seconds={fit_seconds:.0f} "
          f"cache_saved={info['cache_hit_rate']:.3f}")


if __name__ == "__main__":
    main()
