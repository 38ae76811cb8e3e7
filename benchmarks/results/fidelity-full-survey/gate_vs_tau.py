"""Diagnosis (test respondents, no tuning): on non-voters (a) at full size, is MoP's loss to the uniform
mixture the gate's draws or its learned temperatures? Simulates MoP's own draws with every temperature
set to tau_init (uniform's), next to the run's MoP, and scores both as `fidelity.py` does."""

import sys
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parent)]
import fidelity as F  # noqa: E402
from gate_draws import fit_nonvoters_a  # noqa: E402

cfg, pop, lm, mop, agents, _ = fit_nonvoters_a()
real, questions = F._real(pop), list(pop.questions)
options = {q.id: q.option_labels for q in questions}
for label, fixed_tau in (("mop (learned tau)", False), ("mop draws at tau_init", True)):
    if fixed_tau:
        sample = mop.sample

        def sample_at_tau_init(texts, rng, _sample=sample):
            draw = _sample(texts, rng)
            draw["temperature"] = np.full(len(texts), mop.tau_init)
            return draw

        mop.sample = sample_at_tau_init
    synth = F.simulate(pop, agents, questions, "mop", mop, lm, 0)
    cells = F.cell_fidelity(synth, real, options, list(pop.attributes), max_order=cfg["max_order"],
                            n_boot=cfg["n_boot"], seed=0)
    s = F.summarise_cells(cells)
    share = synth[list(options)].stack().value_counts(normalize=True)
    print(f"{label:>22}: TV {s['tv']:.3f} (all {s['tv_all']:.3f} {s['tv_all_ci']}); "
          f"'very important' {share.get('very important', 0):.3f}", flush=True)
