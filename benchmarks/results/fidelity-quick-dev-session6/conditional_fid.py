"""Conditional fidelity of the last fidelity.py text run (test splits, read-only): FID per label.

The pooled FID / MAUVE compare all generated texts with all real ones, so they cannot see whether a text
fits the context it was written for. Here the texts written for contexts of one label (IMDB pos/neg from the
rating, SST-2 positive/negative, AG News topic) are compared with the real reference texts of that label;
the score is the mean over labels weighted by the real label shares, with a paired bootstrap over the
generation contexts (MoP minus uniform). Usage: ``python conditional_fid.py [n_boot]``.
"""

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # benchmarks/
import fidelity as F

from popsim.embed import SentenceEncoder
from popsim.eval.metrics import fid
from popsim.lm.loading import cache_dir

n_boot = int(sys.argv[1]) if len(sys.argv) > 1 else 100
cfg = F.SIZES["quick"]["text"]
encoder = SentenceEncoder(cache_path=cache_dir() / "embeddings-text.sqlite")
rng = np.random.default_rng(0)
methods = ("mop", "uniform", "mop-random-personas", "no-persona", "persona-only")


def conditional_fid(real_emb, real_lab, emb, lab) -> float:
    labels, counts = np.unique(real_lab, return_counts=True)
    scores = [fid(real_emb[real_lab == c], emb[lab == c]) for c in labels]
    return float(np.average(scores, weights=counts))


means = {m: [] for m in methods}
diffs = []
for name in ["imdb", "agnews", "sst2"]:
    real, gen_ctx, _ = F.heldout_samples(F.load_text(name, cfg["max_words"], 0)["test"], cfg, 0)
    real_emb, real_lab = encoder.encode(list(real["text"])), np.asarray(real["label"])
    lab = np.asarray(gen_ctx["label"])
    samples = json.loads((cache_dir() / "fidelity-samples" / f"text-{name}-samples.json").read_text())["samples"]
    assert [s["context"] for s in samples["mop"]] == list(gen_ctx["context"]), "samples are not this split's"
    emb = {m: encoder.encode([s["text"] for s in samples[m]]) for m in methods}
    point = {m: conditional_fid(real_emb, real_lab, emb[m], lab) for m in methods}
    for m in methods:
        means[m].append(point[m])
    boot = []
    for _ in range(n_boot):
        idx = rng.integers(len(lab), size=len(lab))
        boot.append(conditional_fid(real_emb, real_lab, emb["mop"][idx], lab[idx])
                    - conditional_fid(real_emb, real_lab, emb["uniform"][idx], lab[idx]))
    diffs.append(np.array(boot))
    print(f"{name:7s} per-label FID " + "  ".join(f"{m} {point[m]:.3f}" for m in methods)
          + f"  | MoP-uniform 95% [{np.percentile(boot, 2.5):+.3f}, {np.percentile(boot, 97.5):+.3f}]", flush=True)
mean_diff = np.mean(diffs, axis=0)
print("mean over datasets " + "  ".join(f"{m} {np.mean(means[m]):.4f}" for m in methods)
      + f"  | MoP-uniform 95% [{np.percentile(mean_diff, 2.5):+.4f}, {np.percentile(mean_diff, 97.5):+.4f}],"
      f" MoP better in {np.mean(mean_diff < 0):.2f} of resamples")
