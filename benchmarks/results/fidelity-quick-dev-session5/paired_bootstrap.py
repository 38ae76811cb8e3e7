"""Paired bootstrap of MoP minus uniform on the last fidelity.py text run (test splits, read-only analysis).

Resamples the generation contexts (the same indices for both methods) and recomputes FID and MAUVE
against the fixed real reference set; prints 95% intervals per dataset and for the mean over datasets.
Usage: python paired_bootstrap.py [n_fid] [n_mauve]
"""

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # benchmarks/
import fidelity as F

from popsim.embed import SentenceEncoder
from popsim.eval.metrics import fid, mauve_score
from popsim.lm.loading import cache_dir

n_fid = int(sys.argv[1]) if len(sys.argv) > 1 else 200
n_mauve = int(sys.argv[2]) if len(sys.argv) > 2 else 40
cfg = F.SIZES["quick"]["text"]
enc = SentenceEncoder(cache_path=cache_dir() / "embeddings-text.sqlite")
rng = np.random.default_rng(0)
diffs = {"fid": [], "mauve": []}
for name in ["imdb", "agnews", "sst2"]:
    real_texts, _, _ = F.heldout_samples(F.load_text(name, cfg["max_words"], 0)["test"], cfg, 0)
    real = enc.encode(list(real_texts["text"]))
    samples = json.loads((cache_dir() / "fidelity-samples" / f"text-{name}-samples.json").read_text())["samples"]
    emb = {m: enc.encode([s["text"] for s in samples[m]]) for m in ("mop", "uniform")}
    n = len(emb["mop"])
    point = fid(real, emb["mop"]) - fid(real, emb["uniform"])
    idx_f = [rng.integers(n, size=n) for _ in range(n_fid)]
    d_fid = np.array([fid(real, emb["mop"][i]) - fid(real, emb["uniform"][i]) for i in idx_f])
    idx_m = [rng.integers(n, size=n) for _ in range(n_mauve)]

    def mv(e, real=real):
        return np.mean([mauve_score(real, e, seed=s, num_buckets=cfg["mauve_buckets"]) for s in range(3)])

    d_mauve = np.array([mv(emb["mop"][i]) - mv(emb["uniform"][i]) for i in idx_m])
    diffs["fid"].append(d_fid)
    diffs["mauve"].append(d_mauve)
    print(
        f"{name}: FID MoP-uniform {point:+.3f} [{np.percentile(d_fid, 2.5):+.3f}, {np.percentile(d_fid, 97.5):+.3f}]"
        f"  MAUVE [{np.percentile(d_mauve, 2.5):+.3f}, {np.percentile(d_mauve, 97.5):+.3f}]",
        flush=True,
    )
for m in ("fid", "mauve"):
    mean = np.mean(diffs[m], axis=0)  # datasets resampled independently, averaged as in the RESULT line
    print(
        f"mean over datasets, {m} MoP-uniform: 95% [{np.percentile(mean, 2.5):+.4f}, {np.percentile(mean, 97.5):+.4f}]"
        f"; share of resamples where MoP is better: {np.mean(mean < 0 if m == 'fid' else mean > 0):.2f}"
    )
