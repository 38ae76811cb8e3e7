"""Do the drawn exemplars' own texts match the real held-out texts? No generation, so no LM sampling noise.

For each dataset: fit the quick text setting's MoP with the plain and the calibrated exemplar gate (the score
cache makes a refit cheap), draw one exemplar for each of the 128 generation contexts ``reps`` times, and
report mean FID / MAUVE (3 k-means seeds) of the drawn exemplar texts against the real reference, beside
uniform draws from the same pool. Usage: ``python exemplar_draws.py imdb,sst2,agnews [dev|test]``.
"""

import sys
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

torch.set_num_threads(2)
names, split = sys.argv[1].split(","), (sys.argv[2] if len(sys.argv) > 2 else "dev")
cfg = dict(F.SIZES["quick"]["text"], mauve_seeds=3)
encoder = SentenceEncoder(cache_path=cache_dir() / "embeddings-text.sqlite")
lm = HFLanguageModel()
reps = 10
for name in names:
    splits = F.load_text(name, cfg["max_words"], 0)
    train = F._sample(splits["train"], cfg["n_train"], 0)
    real, gen_ctx, _ = F.heldout_samples(splits[split], cfg, 0)
    real_emb = encoder.encode(list(real["text"]))
    records = Records(list(train["context"]), list(train["text"]))
    models = {}
    for label, calibrate in (("plain", False), ("calibrated", True)):
        settings = dict(F._estimator_settings(cfg), calibrate_exemplars=calibrate)
        models[label] = MixtureOfPersonas(
            lm, encoder, n_personas=cfg["n_personas"], style=replace(F.TEXT_STYLE, exemplar_turn=True),
            cache_path=cache_dir() / "scores-text.sqlite", random_state=0, verbose=False, **settings,
        ).fit(records)
    pool_emb = encoder.encode(models["plain"].exemplars_.outputs)
    contexts = list(gen_ctx["context"])
    for label in ("plain", "calibrated", "uniform"):
        fids, mauves = [], []
        for r in range(reps):
            rng = np.random.default_rng(100 + r)
            if label == "uniform":
                js = rng.integers(len(pool_emb), size=len(contexts))
            else:
                js = models[label].sample(contexts, rng)["exemplar"]
            fids.append(fid(real_emb, pool_emb[js]))
            mauves.append(F._mauve(real_emb, pool_emb[js], cfg))
        se = np.sqrt(reps)
        print(f"{name:7s} {label:10s} exemplar draws: FID {np.mean(fids):.3f} +- {np.std(fids) / se:.3f}  "
              f"MAUVE {np.mean(mauves):.3f} +- {np.std(mauves) / se:.3f}", flush=True)
