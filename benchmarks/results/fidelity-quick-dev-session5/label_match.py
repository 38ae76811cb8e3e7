"""Share of drawn exemplars whose label matches the generation context (last fidelity.py text run)."""

import json
import sys

import numpy as np

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))  # benchmarks/
import fidelity as F

from popsim.lm.loading import cache_dir
from popsim.mop import Records
from popsim.mop.records import ExemplarPool

cfg = F.SIZES["quick"]["text"]
for name in ["imdb", "sst2", "agnews"]:
    train = F._sample(F.load_text(name, cfg["max_words"], 0)["train"], cfg["n_train"], 0)
    pool = ExemplarPool.from_records(Records(list(train["context"]), list(train["text"])), cfg["n_exemplars"], seed=0)
    lab = dict(zip(train["context"], train["label"]))
    held = F.load_text(name, cfg["max_words"], 0)["test"]
    clab = dict(zip(held["context"], held["label"]))
    d = json.loads((cache_dir() / "fidelity-samples" / f"text-{name}-samples.json").read_text())["samples"]
    for m in ("mop", "uniform"):
        same = [lab[pool.inputs[s["exemplar"]]] == clab[s["context"]] for s in d[m]]
        print(
            name,
            m,
            f"exemplar label == context label: {np.mean(same):.2f}",
            "distinct exemplars",
            len({s["exemplar"] for s in d[m]}),
        )
