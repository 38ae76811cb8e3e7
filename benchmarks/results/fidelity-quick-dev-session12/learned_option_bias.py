"""Does a per-option bias learned from the training respondents' answers remove the LM's option bias? Dev.

Contextual calibration (session 11) divided by the bare prompt's option distribution: it helped GSS and ruined
non-voters. Here the bias is *learned*: for each answer scale (tuple of option labels) one additive offset per
option, fitted so that the simulated agents' mean option probabilities on the *seen* items match the training
respondents' (weighted) answers to those items. Then it is added to the log-probabilities of the *asked* items
(protocol (b): new questions, never seen in fitting; protocol (a): the same items) and each answer is resampled
from the same per-answer random stream fidelity.py uses. Fitted per method, on that method's own simulated
answers, so every LM method gets the same treatment. No real answer of a held-out respondent is used.

    python benchmarks/results/fidelity-quick-dev-session12/learned_option_bias.py --seed 0 [--surveys gss]

The logs beside it come from its first version (commit 74b66b9), which fitted the offsets with its own copy
of the fixed-point loop; it now uses the library's ``OptionBias`` and fidelity.py's helpers, and reproduces
them (checked: GSS seed 0 (b), MoP and uniform, the same figures to the last digit).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import fidelity as F  # noqa: E402

from popsim.sim.calibration import answer_shares  # noqa: E402


def main() -> None:
    args, cfg, lm, encoder, out = F.analysis_setup("/tmp/learned-option-bias")
    for name in args.surveys.split(","):
        for pop, agents, protocol, seen, asked, mop in F.dev_survey_fits(name, cfg, lm, encoder, args.seed, out,
                                                                         args.protocols):
            everything = [q for q in pop.questions if q.id in seen | asked]
            seen_qs = [q for q in everything if q.id in seen]
            asked_qs = [q for q in everything if q.id in asked]
            target = answer_shares(pop.train, seen_qs, pop.train["weight"].to_numpy())
            uncovered = sorted({tuple(q.option_labels) for q in asked_qs} - set(target))
            print(f"[{name}/{protocol}] real seen-item shares: "
                  + "; ".join(f"{dict(zip(s, np.round(t, 2)))}" for s, t in target.items())
                  + (f"; scales with no seen item (left raw): {uncovered}" if uncovered else ""), flush=True)
            for method in F.SURVEY_METHODS:
                raw, learned, bias = F.raw_and_posthoc_tv(pop, agents, everything, method, mop, lm, args.seed, seen,
                                                          asked)
                print(f"[{name}/{protocol}] {method:>12}: raw {raw} | learned {learned}   bias: "
                      + "; ".join(str(np.round(b, 2).tolist()) for b in bias.offsets.values()), flush=True)


if __name__ == "__main__":
    main()
