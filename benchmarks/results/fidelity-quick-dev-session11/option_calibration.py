"""Does contextual calibration (Zhao et al. 2021) remove the LM's option bias on surveys? Dev, quick sizes.

For each survey and protocol, fit MoP as fidelity.py does, simulate every LM method once, and keep each agent's
option probabilities. Then sample each agent's answer three ways, from the same per-answer random stream:
raw (what fidelity.py scores), divided by a *bare* content-free distribution (the survey prompt with the
question "N/A" and nothing else: the LM's own preference among the option wordings), and divided by the
*agent's* content-free distribution (the agent's full prompt, persona, exemplar and profile, with the
question replaced by "N/A"). Prints mean TV over the population and single-attribute cells, as fidelity.py.

    python benchmarks/results/fidelity-quick-dev-session11/option_calibration.py --seed 0 [--surveys gss]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import fidelity as F  # noqa: E402

from popsim.config import QuestionSpec  # noqa: E402
from popsim.mop.prompts import build_prompt  # noqa: E402
from popsim.sim.model import PopulationModel  # noqa: E402


def content_free(model: PopulationModel, questions: list, per_agent: bool) -> dict:
    """(agent or -1, option tuple) -> content-free option probabilities."""
    keys, prompts, opts, temps = [], [], [], []
    for opt in sorted({tuple(q.option_labels) for q in questions}):
        na = QuestionSpec(id="na", text="N/A", options=list(opt))
        agents = sorted(model.agents, key=lambda a: a.person_id) if per_agent else [None]
        for a in agents:
            if a is None:
                prompts.append(build_prompt(None, None, "Q: N/A", model.style))
                temps.append(1.0)
            else:
                prompts.append(model.prompt_for(a, na))
                temps.append(a.temperature)
            keys.append((-1 if a is None else a.person_id, opt))
            opts.append(list(opt))
    out = {}
    for start in range(0, len(prompts), 256):
        lps = model.lm.option_logprobs(prompts[start:start + 256], opts[start:start + 256],
                                       temperature=temps[start:start + 256])
        for key, lp in zip(keys[start:start + 256], lps, strict=True):
            out[key] = np.exp(lp - np.logaddexp.reduce(lp))
    return out


def divide(cf: dict | None, per_agent: bool):
    """Option probabilities divided by a content-free distribution (the agent's own, or the bare one)."""
    def reweigh(r, q, p):
        return p if cf is None else p / cf[(r.agent if per_agent else -1, tuple(q.option_labels))]
    return reweigh


def main() -> None:
    args, cfg, lm, encoder, out = F.analysis_setup("/tmp/option-calibration")
    for name in args.surveys.split(","):
        bare = None  # the bare prompt carries no persona or exemplar: one distribution for every method
        for pop, agents, protocol, _, asked, mop in F.dev_survey_fits(name, cfg, lm, encoder, args.seed, out,
                                                                      args.protocols):
            questions = [q for q in pop.questions if q.id in asked]
            options = {q.id: q.option_labels for q in questions}
            for method in F.SURVEY_METHODS:
                model = F.population_model(pop, agents, questions, method, mop, lm, args.seed)
                model.step()
                responses = model.responses()
                bare = bare or content_free(model, questions, False)
                variants = {"raw": None, "bare": bare, "agent": content_free(model, questions, True)}
                line = [f"{variant} " + F.attribute_tv(F.redraw(model, responses, divide(cf, variant == "agent")), pop,
                                                       agents, options, args.seed)
                        for variant, cf in variants.items()]
                if method == "mop":
                    print(f"[{name}/{protocol}] bare content-free: "
                          + "; ".join(f"{dict(zip(k[1], np.round(v, 2)))}" for k, v in bare.items()
                                      if k[1] in {tuple(o) for o in options.values()}), flush=True)
                print(f"[{name}/{protocol}] {method:>12}: " + " | ".join(line), flush=True)


if __name__ == "__main__":
    main()
