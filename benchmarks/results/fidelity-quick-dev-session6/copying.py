"""Does a generated text copy its exemplar? Cosine (MiniLM) and word overlap of each text with the exemplar
it was shown, for MoP and the uniform mixture, from a dev run's saved samples (read-only, no LM).
Usage: ``python copying.py SAMPLES_DIR`` (the folder with ``text-<name>-dev-samples.json``)."""

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # benchmarks/
import fidelity as F

from popsim.embed import SentenceEncoder
from popsim.lm.loading import cache_dir
from popsim.mop import Records
from popsim.mop.records import ExemplarPool

cfg = F.SIZES["quick"]["text"]
encoder = SentenceEncoder(cache_path=cache_dir() / "embeddings-text.sqlite")
folder = Path(sys.argv[1])
for name in ["imdb", "agnews", "sst2"]:
    train = F._sample(F.load_text(name, cfg["max_words"], 0)["train"], cfg["n_train"], 0)
    pool = ExemplarPool.from_records(Records(list(train["context"]), list(train["text"])), cfg["n_exemplars"], seed=0)
    samples = json.loads((folder / f"text-{name}-dev-samples.json").read_text())["samples"]
    for method in ("mop", "uniform"):
        texts = [s["text"] for s in samples[method]]
        shown = [pool.outputs[s["exemplar"]] for s in samples[method]]
        cos = (encoder.encode(texts) * encoder.encode(shown)).sum(1)
        overlap = [len(set(t.lower().split()) & set(e.lower().split())) / max(1, len(set(t.lower().split())))
                   for t, e in zip(texts, shown, strict=True)]
        print(f"{name:7s} {method:8s} cos(text, its exemplar) {cos.mean():.3f} (share > 0.9: {(cos > 0.9).mean():.2f})"
              f"  word overlap {np.mean(overlap):.2f}")
