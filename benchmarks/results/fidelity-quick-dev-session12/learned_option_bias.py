"""Does a per-option bias learned from the training respondents' answers remove the LM's option bias? Dev.

Contextual calibration (session 11) divided by the bare prompt's option distribution: it helped GSS and ruined
non-voters. Here the bias is *learned*: for each answer scale (tuple of option labels) one additive offset per
option, fitted so that the simulated agents' mean option probabilities on the *seen* items match the training
respondents' (weighted) answers to those items. Then it is added to the log-probabilities of the *asked* items
(protocol (b): new questions, never seen in fitting; protocol (a): the same items) and each answer is resampled
from the same per-answer random stream fidelity.py uses. Fitted per method, on that method's own simulated
answers, so every LM method gets the same treatment. No real answer of a held-out respondent is used.

    python benchmarks/results/fidelity-quick-dev-session12/learned_option_bias.py --seed 0 [--surveys gss]
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import fidelity as F  # noqa: E402

from popsim.eval.subgroups import cell_fidelity, respondent_table  # noqa: E402


def real_marginals(train: pd.DataFrame, questions: list) -> dict[tuple, np.ndarray]:
    """Per scale: the training respondents' weighted answer shares over the given items."""
    counts: dict[tuple, np.ndarray] = defaultdict(lambda: None)
    w = train["weight"].to_numpy(float) if "weight" in train else np.ones(len(train))
    for q in questions:
        scale = tuple(q.option_labels)
        col = train[f"q_{q.id}"]
        c = np.array([w[(col == o).to_numpy()].sum() for o in scale])
        counts[scale] = c if counts[scale] is None else counts[scale] + c
    return {s: c / c.sum() for s, c in counts.items()}


def fit_bias(logp: np.ndarray, target: np.ndarray, iters: int = 300) -> np.ndarray:
    """Offsets b with mean_i softmax(logp_i + b) == target (a convex dual; fixed-point updates converge)."""
    b = np.zeros(logp.shape[1])
    target = np.clip(target, 1e-4, None)
    for _ in range(iters):
        z = logp + b
        p = np.exp(z - np.logaddexp.reduce(z, axis=1, keepdims=True))
        b += np.log(target) - np.log(p.mean(0))
        b -= b.mean()
    return b


def resample(model, responses: pd.DataFrame, bias: dict[tuple, np.ndarray] | None) -> pd.DataFrame:
    rows = []
    for r in responses.itertuples():
        q = model.question_by_id[r.question]
        p = np.array([r.probs[o] for o in q.option_labels], dtype=float)
        b = None if bias is None else bias.get(tuple(q.option_labels))
        if b is not None:
            z = np.log(np.clip(p, 1e-9, None)) + b
            p = np.exp(z - np.logaddexp.reduce(z))
        rng = model.answer_rng(r.agent, r.round, r.question)
        rows.append({"agent": r.agent, "round": r.round, "question": r.question,
                     "answer": q.option_labels[int(rng.choice(len(p), p=p / p.sum()))]})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--surveys", default="gss,nonvoters")
    parser.add_argument("--protocols", default="ab")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = dict(F.SIZES["quick"]["survey"])
    lm, encoder = F.models("survey")
    out = Path("/tmp/learned-option-bias")
    out.mkdir(exist_ok=True)
    for name in args.surveys.split(","):
        pop = F.load_survey(name, cfg, args.seed, out, True)
        seen_b, unseen_b = F.split_items(pop, args.seed + 1)
        qmap = {q.id: q for q in pop.questions}
        agents = F.agent_rows(pop, args.seed)
        real = F._real(pop)
        attr_cols = [f"attr_{a}" for a in pop.attributes]
        for protocol, seen, asked in (("a", set(qmap), set(qmap)), ("b", seen_b, unseen_b)):
            if protocol not in args.protocols:
                continue
            mop = F.fit_survey_mop(pop, seen, cfg, lm, encoder, args.seed, new_questions=protocol == "b")
            everything = [qmap[q] for q in qmap if q in seen | asked]
            seen_qs = [q for q in everything if q.id in seen]
            asked_qs = [q for q in everything if q.id in asked]
            options = {q.id: q.option_labels for q in asked_qs}
            target = real_marginals(pop.train, seen_qs)
            uncovered = sorted({tuple(q.option_labels) for q in asked_qs} - set(target))
            print(f"[{name}/{protocol}] real seen-item shares: "
                  + "; ".join(f"{dict(zip(s, np.round(t, 2)))}" for s, t in target.items())
                  + (f"; scales with no seen item (left raw): {uncovered}" if uncovered else ""), flush=True)
            for method in F.SURVEY_METHODS:
                model = F.population_model(pop, agents, everything, method, mop, lm, args.seed)
                model.step()
                responses = model.responses()
                on_seen = responses[responses["question"].isin(seen)]
                bias = {}
                for scale, t in target.items():
                    rows = [r for r in on_seen.itertuples() if tuple(model.question_by_id[r.question].option_labels)
                            == scale]
                    logp = np.log(np.clip([[r.probs[o] for o in scale] for r in rows], 1e-9, None))
                    bias[scale] = fit_bias(logp, t)
                asked_rows = responses[responses["question"].isin(asked)]
                line = []
                for variant, b in (("raw", None), ("learned", bias)):
                    wide = respondent_table(resample(model, asked_rows, b))
                    for c in attr_cols:
                        wide[c] = agents[c].to_numpy()[wide["agent"].to_numpy()]
                    cells = cell_fidelity(wide, real, options, list(pop.attributes), max_order=1, n_boot=10,
                                          seed=args.seed)
                    s = F.summarise_cells(cells)
                    dist = wide[list(options)].stack().value_counts(normalize=True)
                    line.append(f"{variant} {s['tv']:.3f} (all {s['tv_all']:.3f}; {dist.index[0]} {dist.iloc[0]:.2f})")
                print(f"[{name}/{protocol}] {method:>12}: " + " | ".join(line) + "   bias: "
                      + "; ".join(str(np.round(b, 2).tolist()) for b in bias.values()), flush=True)


if __name__ == "__main__":
    main()
