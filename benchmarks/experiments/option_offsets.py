"""Post-hoc option offsets for every LM method on the survey part (dev splits, quick sizes).

    python -m benchmarks.experiments.option_offsets --seed 0 [--surveys gss] [--protocols ab]   # repository root

Per answer scale (tuple of option labels), one additive offset per option on the LM's option log-probabilities,
fitted so that the simulated agents' mean option probabilities on the *seen* items match the training
respondents' (weighted) answer shares on those items; then added to the *asked* items (protocol (b): the
held-out third of the items; protocol (a): the same items) and each answer redrawn from the same per-answer
random stream the benchmark uses. Fitted per method on that method's own simulated answers, so every LM method
gets the same treatment; no answer of a held-out respondent is used. Prints, per survey, protocol and method,
mean TV over the population and single-attribute cells raw and with the offsets, and the offsets.

MoP is fitted with the benchmark's survey settings, which since 2026-12-04 include its own learned option
offsets (``learn_option_offsets``); the figures in docs/experiments.md from 2026-12-03 predate that.
The library's version of the post-hoc offsets is ``simulation.option_bias: learned``.
"""

from __future__ import annotations

import numpy as np

from benchmarks.fidelity_suite import SURVEY_METHODS, analysis_setup, dev_survey_fits, raw_and_posthoc_tv
from popsim.sim.calibration import answer_shares


def main() -> None:
    args, cfg, lm, encoder, out = analysis_setup("/tmp/learned-option-bias")
    for name in args.surveys.split(","):
        for pop, agents, protocol, seen, asked, mop in dev_survey_fits(name, cfg, lm, encoder, args.seed, out,
                                                                       args.protocols):
            everything = [q for q in pop.questions if q.id in seen | asked]
            seen_qs = [q for q in everything if q.id in seen]
            asked_qs = [q for q in everything if q.id in asked]
            target = answer_shares(pop.train, seen_qs, pop.train["weight"].to_numpy())
            uncovered = sorted({tuple(q.option_labels) for q in asked_qs} - set(target))
            print(f"[{name}/{protocol}] real seen-item shares: "
                  + "; ".join(f"{dict(zip(s, np.round(t, 2)))}" for s, t in target.items())
                  + (f"; scales with no seen item (left raw): {uncovered}" if uncovered else ""), flush=True)
            for method in SURVEY_METHODS:
                raw, learned, bias = raw_and_posthoc_tv(pop, agents, everything, method, mop, lm, args.seed, seen,
                                                        asked)
                print(f"[{name}/{protocol}] {method:>12}: raw {raw} | learned {learned}   bias: "
                      + "; ".join(str(np.round(b, 2).tolist()) for b in bias.offsets.values()), flush=True)


if __name__ == "__main__":
    main()
