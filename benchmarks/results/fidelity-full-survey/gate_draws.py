"""Diagnosis (test respondents, no tuning): which exemplars does the full-size non-voters (a) gate draw?

Refits the protocol (a) model exactly as `fidelity.py --only survey` does (seed 0; scores come from the
cache), draws one (persona, exemplar) per simulated agent from MoP's gates and uniformly, and compares the
answers in the drawn exemplars' transcripts with the pool's and the real held-out respondents'.
"""

import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import fidelity as F  # noqa: E402

from popsim.data import profile_text  # noqa: E402


def fit_nonvoters_a():
    """The protocol (a) non-voters fit of `fidelity.py --only survey` (full sizes, seed 0), with what a
    diagnosis needs: (cfg, pop, lm, mop, agents, the agents' gate texts)."""
    torch.set_num_threads(2)
    # plain MoP: the run these logs diagnose predates the learned option offsets (now on in TRAINING)
    cfg = dict(F.SIZES["full"]["survey"], learn_option_offsets=False)
    pop = F.load_survey("nonvoters", cfg, 0, Path("/tmp/gate-draws"), False)
    lm, encoder = F.models("survey")
    mop = F.fit_survey_mop(pop, {q.id for q in pop.questions}, cfg, lm, encoder, 0)
    agents = F.agent_rows(pop, 0)
    return cfg, pop, lm, mop, agents, [profile_text(r, pop.attributes) for _, r in agents.iterrows()]


def answer_shares(transcripts: list[str]) -> Counter:
    counts: Counter = Counter()
    for t in transcripts:
        for line in t.splitlines():
            if line.startswith("A:"):
                counts[line[2:].strip()] += 1
    total = sum(counts.values())
    return Counter({k: round(v / total, 3) for k, v in counts.most_common(5)})


def main() -> None:
    _, pop, _, mop, _, texts = fit_nonvoters_a()
    pool = list(mop.exemplars_.outputs)
    mop_draw = mop.sample(texts, np.random.default_rng(0))["exemplar"]
    uni_draw = np.random.default_rng(0).integers(len(pool), size=len(texts))
    print("pool answers:", answer_shares(pool))
    for label, draw in (("MoP-drawn", mop_draw), ("uniform-drawn", uni_draw)):
        print(f"{label} exemplars:", answer_shares([pool[j] for j in draw]), "distinct", len(set(draw.tolist())))
    real = pop.test[[c for c in pop.test.columns if c.startswith("q_")]].stack().value_counts(normalize=True)
    print("real held-out answers:", real.head(5).round(3).to_dict())
    print("tau:", np.round(mop.temperatures_, 3).tolist())


if __name__ == "__main__":
    main()
