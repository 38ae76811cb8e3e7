"""Dev splits only: how text fidelity (FID / MAUVE) and the likelihood objective depend on the temperature.

Usage: python tau_sweep.py imdb,sst2 0.75,0.9,1.05
"""

import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # benchmarks/
import fidelity as F

from popsim.embed import SentenceEncoder
from popsim.eval.metrics import fid
from popsim.lm.hf import HFLanguageModel
from popsim.lm.loading import cache_dir
from popsim.mop import MixtureOfPersonas, Records
from popsim.mop.scoring import pair_log_likelihood

torch.set_num_threads(2)
cfg = dict(F.SIZES["quick"]["text"])
lm = HFLanguageModel()
enc = SentenceEncoder(cache_path=cache_dir() / "embeddings-text.sqlite")
taus = [float(t) for t in sys.argv[2].split(",")]
for name in sys.argv[1].split(","):
    seed = 0
    splits = F.load_text(name, cfg["max_words"], seed)
    train = F._sample(splits["train"], cfg["n_train"], seed)
    real, gen_ctx, _ = F.heldout_samples(splits["dev"], cfg, seed)
    ctx = list(gen_ctx["context"])
    personas = json.load(open(cache_dir() / "fidelity-samples" / f"text-{name}-dev-samples.json"))["personas"]
    style = replace(F.TEXT_STYLE, exemplar_turn=True)
    records = Records(list(train["context"]), list(train["text"]))
    mop = MixtureOfPersonas(
        lm,
        enc,
        n_personas=4,
        personas=personas,
        style=style,
        cache_path=cache_dir() / "scores-text.sqlite",
        random_state=seed,
        verbose=False,
        **F._estimator_settings(cfg),
    ).fit(records)
    # MLE over tau for random pairs on 32 training records
    rng = np.random.default_rng(5)
    idx = rng.choice(len(records), 32, replace=False)
    prompts, ys = [], []
    for i in idx:
        for _ in range(2):
            j = int(rng.integers(len(mop.exemplars_)))
            while mop.exemplars_.groups[j] == records.groups[i]:
                j = int(rng.integers(len(mop.exemplars_)))
            prompts.append(mop.prompt(int(rng.integers(4)), j, records.contexts[i]))
            ys.append(records.responses[i])
    t = time.perf_counter()
    grid = [0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.4]
    lls = []
    for tau in grid:
        ll, nt = pair_log_likelihood(mop.cache_, prompts, ys, [None] * len(ys), torch.full((len(ys),), tau))
        lls.append(float(ll.sum() / nt.sum()))
    print(
        name, "per-token LL by tau", dict(zip(grid, np.round(lls, 3))), f"({time.perf_counter() - t:.0f}s)", flush=True
    )
    real_emb = enc.encode(list(real["text"]))
    seeds = [seed * 100_003 + i for i in range(len(ctx))]
    for method in ["uniform", "mop"]:
        draw = F.assign_mixture(method, mop, ctx, np.random.default_rng(seed))
        ps = [mop.prompt(int(k), int(j), c) for k, j, c in zip(draw["persona"], draw["exemplar"], ctx)]
        for tau in taus:
            t = time.perf_counter()
            texts = lm.generate(ps, max_new_tokens=cfg["max_new_tokens"], temperature=tau, seed=seeds)
            texts = [" ".join(x.split()) or "." for x in texts]
            emb = enc.encode(texts)
            print(
                f"{name} {method} tau={tau}: FID {fid(real_emb, emb):.3f} MAUVE {F._mauve(real_emb, emb, cfg):.3f} "
                f"words {np.mean([len(x.split()) for x in texts]):.1f} ({time.perf_counter() - t:.0f}s)",
                flush=True,
            )
