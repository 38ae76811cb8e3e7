"""Option offsets learned inside MoP's likelihood (jointly with the gates) vs fitted afterwards. Dev.

Session 12 fitted one offset per (answer scale, option) after the fact, on each method's simulated answers
(post-hoc), and found it levels the LM methods on new questions: much of what MoP's exemplar transcripts did
was undoing SmolLM2's option bias. Here MoP learns the offsets inside its training likelihood
(``MixtureOfPersonas(learn_option_offsets=True)``), so its gates are trained against a debiased LM and can
spend themselves on who answers what. Compared per survey and protocol, on the same agents and answer
streams: MoP (plain), MoP with post-hoc offsets, MoP-joint (its learned offsets applied in simulation, as
the library does), MoP-joint plus post-hoc offsets on top, and the uniform mixture raw and post-hoc (the
other methods' post-hoc figures are in ../fidelity-quick-dev-session12/, same seeds and code path).

    python benchmarks/results/fidelity-quick-dev-session13/joint_option_offsets.py --seed 0 [--surveys gss]

``OFFSET_LR`` (environment, default the library's 0.1) sets the offsets' Adam step size.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import fidelity as F  # noqa: E402

LR = float(os.environ.get("OFFSET_LR", "0.1"))


def fmt(offsets) -> str:
    return "; ".join(str(np.round(b, 2).tolist()) for b in offsets.values())


def main() -> None:
    args, cfg, lm, encoder, out = F.analysis_setup("/tmp/joint-option-offsets")
    for name in args.surveys.split(","):
        for pop, agents, protocol, seen, asked, mop in F.dev_survey_fits(name, cfg, lm, encoder, args.seed, out,
                                                                         args.protocols):
            joint = F.fit_survey_mop(pop, seen, dict(cfg, learn_option_offsets=True, offset_learning_rate=LR), lm,
                                     encoder, args.seed, new_questions=protocol == "b")
            tag = f"[{name}/{protocol}]" + (f"[lr {LR}]" if LR != 0.1 else "")
            print(f"{tag} best val loss plain {mop.fit_info_['best_val_loss']:.4f} joint "
                  f"{joint.fit_info_['best_val_loss']:.4f}; joint offsets: {fmt(joint.option_offsets_)}; "
                  f"taus plain {np.round(mop.temperatures_, 2).tolist()} joint "
                  f"{np.round(joint.temperatures_, 2).tolist()}", flush=True)
            everything = [q for q in pop.questions if q.id in seen | asked]
            for label, method, model_mop in (("mop", "mop", mop), ("mop-joint", "mop", joint),
                                              ("uniform", "uniform", mop)):
                raw, posthoc, bias = F.raw_and_posthoc_tv(pop, agents, everything, method, model_mop, lm, args.seed,
                                                          seen, asked)
                print(f"{tag} {label:>10}: raw {raw} | post-hoc {posthoc}   post-hoc offsets: {fmt(bias.offsets)}",
                      flush=True)


if __name__ == "__main__":
    main()
