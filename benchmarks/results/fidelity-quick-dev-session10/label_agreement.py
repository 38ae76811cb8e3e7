"""How often does MoP's exemplar gate draw an exemplar of the asked label? mean vs joint pair embedding (dev).

    python benchmarks/results/fidelity-quick-dev-session10/label_agreement.py [--text sst2,imdb,agnews] [--seed 0]

Fits the quick text setting on dev (LM scores from the cache when the fidelity runs made them) with
``pair_embedding`` mean (shipped until session 10) and joint (the paper's h(x_j, y_j)), draws an exemplar
for each of the 128 generation contexts ten times, and prints the share of draws whose exemplar was written
for the same label / topic / rating as the context, and how many distinct exemplars were drawn.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import fidelity as fb  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--text", default="sst2,imdb,agnews")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    lm, encoder = fb.models("text")
    for name in args.text.split(","):
        for how in ("mean", "joint"):
            cfg = dict(fb.SIZES["quick"]["text"], pair_embedding=how)
            mop, train, _, gen_ctx, _ = fb.fit_text_mop(name, cfg, lm, encoder, dev=True, seed=args.seed)
            label_of = dict(zip(train["context"], train["label"], strict=False))
            pool_labels = np.asarray([label_of[x] for x in mop.exemplars_.inputs])
            labels = np.asarray(gen_ctx["label"])
            same, distinct = [], []
            for draw in range(10):
                js = mop.sample(list(gen_ctx["context"]), np.random.default_rng([args.seed, draw]))["exemplar"]
                same.append(float(np.mean(pool_labels[js] == labels)))
                distinct.append(len(set(js.tolist())))
            chance = float(np.mean([np.mean(pool_labels == lab) for lab in labels]))
            print(f"{name:7} {how:5}: same-label draws {np.mean(same):.3f} (uniform draws {chance:.3f}), "
                  f"distinct exemplars per 128 contexts {np.mean(distinct):.1f} of {len(pool_labels)}", flush=True)


if __name__ == "__main__":
    main()
