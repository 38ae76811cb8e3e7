"""Paired bootstrap of MoP minus the uniform mixture on the last quick text run (test splits, read-only).

    python benchmarks/fidelity.py --quick --only text          # writes the samples this reads
    python -m benchmarks.experiments.paired_bootstrap [n_fid] [n_mauve]   # from the repository root

Reads the generated texts the last ``fidelity.py --quick`` text run kept in the popsim cache
(``fidelity-samples/text-<name>-samples.json``), resamples the generation contexts (the same indices for both
methods) and recomputes FID and MAUVE (mean over 3 k-means seeds) against the fixed real reference set;
prints 95% intervals per dataset and for the mean over datasets, as the RESULT line averages them.
"""

import json
import sys

import numpy as np

from benchmarks.fidelity_suite import SIZES, heldout_samples, load_text
from popsim.embed import SentenceEncoder
from popsim.eval.metrics import fid, mauve_score
from popsim.lm.loading import cache_dir


def main() -> None:
    n_fid = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    n_mauve = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    cfg = SIZES["quick"]["text"]
    enc = SentenceEncoder(cache_path=cache_dir() / "embeddings-text.sqlite")
    rng = np.random.default_rng(0)
    diffs = {"fid": [], "mauve": []}
    for name in ["imdb", "agnews", "sst2"]:
        real_texts, _, _ = heldout_samples(load_text(name, cfg["max_words"], 0)["test"], cfg, 0)
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
        lo, hi = np.percentile(d_fid, [2.5, 97.5])
        print(f"{name}: FID MoP-uniform {point:+.3f} [{lo:+.3f}, {hi:+.3f}]"
              f"  MAUVE [{np.percentile(d_mauve, 2.5):+.3f}, {np.percentile(d_mauve, 97.5):+.3f}]", flush=True)
    for m in ("fid", "mauve"):
        mean = np.mean(diffs[m], axis=0)  # datasets resampled independently, averaged as in the RESULT line
        lo, hi = np.percentile(mean, [2.5, 97.5])
        print(f"mean over datasets, {m} MoP-uniform: 95% [{lo:+.4f}, {hi:+.4f}]"
              f"; share of resamples where MoP is better: {np.mean(mean < 0 if m == 'fid' else mean > 0):.2f}")


if __name__ == "__main__":
    main()
