"""Shared-prefix scoring vs per-option full scoring of 5-option questions behind ~340-token prefixes.

Workload: agents built as in ``popsim run`` on the GSS survey (a persona, a real respondent's 8-answer
transcript as exemplar, the agent's profile: ~200 tokens shared by all of the agent's prompts), each
asked several 5-point agree/disagree items. Both sides call the same ``option_logprobs`` of the same
loaded SmolLM2 in the same dtype; only ``prefix_sharing`` differs:

* ``shared``: the backend's prefix tree - each agent's prefix is encoded once, each question on top of
  its KV cache, each option on top of the question's (``HFLanguageModel(prefix_sharing=True)``);
* ``full``: every (prompt + option) is encoded from scratch, in token-budget batches sorted by length
  (what a plain batched scorer does);
* ``dense trees`` (compiled CPU scoring only): the prefix tree as before 2026-12-04, at most 512 tokens per
  tree and every tile of the tree mask computed, against the default tiled trees (one tree per agent,
  attention over a key strip and a diagonal band of tiles, :func:`popsim.lm.attention.tile_layout`).

The sides' log-probabilities are compared (max absolute difference) so the speed-up is for the same
numbers. Repetitions are interleaved and the figure is the median of per-repetition ratios. Last line::

    RESULT prefix_reuse_speedup=X tiled_vs_dense_trees=Y
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
import torch
from common import load_average, survey_workload, timed

from popsim.config import QuestionSpec
from popsim.embed import SentenceEncoder
from popsim.lm.hf import HFLanguageModel
from popsim.sim.model import PopulationModel

MODEL = "smollm2-135m-instruct"
LIKERT = ["Strongly agree", "Agree", "Neither agree nor disagree", "Disagree", "Strongly disagree"]
STATEMENTS = [
    "The government should do more to reduce income differences between the rich and the poor.",
    "Most people can be trusted.",
    "Immigrants generally improve the economy of this country.",
    "Climate change is mostly caused by human activity.",
    "Large companies have too much influence on politics.",
    "Public schools in my area do a good job.",
    "The police treat all groups of people fairly.",
    "It is the government's job to make sure everyone has health insurance.",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--agents", type=int, default=None, help="agents (default 8, quick 4)")
    ap.add_argument("--questions", type=int, default=6,
                    help="5-option questions per agent (past 8 the statements repeat, numbered)")
    ap.add_argument("--reps", type=int, default=None, help="interleaved repetitions (default 3, quick 1)")
    ap.add_argument("--dtype", default="auto", help="auto (bf16 where native), bf16 or fp32")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n_agents = args.agents or (4 if args.quick else 8)
    reps = args.reps or (1 if args.quick else 3)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}; load average {load_average()}")

    lm = HFLanguageModel(MODEL, dtype=args.dtype)
    scenario, _, mop, profiles, texts = survey_workload(lm, SentenceEncoder(), n_agents, n_exemplar_questions=8)
    # past the 8 statements they repeat with a number, so every question's prompt is distinct
    n_stated = len(STATEMENTS)
    texts_asked = [f"({i + 1}) " * (i >= n_stated) + STATEMENTS[i % n_stated] for i in range(args.questions)]
    questions = [QuestionSpec(id=f"s{i}", text=f"How much do you agree? {t}", options=LIKERT)
                 for i, t in enumerate(texts_asked)]
    model = PopulationModel(questions=questions, lm=lm, mop=mop, profiles=profiles, profile_texts=texts,
                            method="uniform", seed=scenario.seed, progress=False)
    prompts = [model.prompt_for(model.by_id[a], q) for a in range(n_agents) for q in questions]
    options = [LIKERT] * len(prompts)
    lengths = [len(lm.tokenizer(lm.render(p), add_special_tokens=False)["input_ids"]) for p in prompts]
    print(f"model dtype {lm.dtype}; {n_agents} agents x {len(questions)} questions x 5 options = "
          f"{len(prompts) * 5} (prompt, option) pairs; prompts {min(lengths)}-{max(lengths)} tokens "
          f"(mean {np.mean(lengths):.0f})")

    tiled_max = lm.max_tree_tokens

    def call(shared: bool, tiles: bool = True) -> list[np.ndarray]:
        lm.prefix_sharing, lm.tree_tiles = shared, tiles
        lm.max_tree_tokens = tiled_max if tiles else 512
        return lm.option_logprobs(prompts, options)

    compare_tiles = lm.tiled_trees
    call(True), call(False)  # warm-up
    if compare_tiles:
        call(True, tiles=False)
    ratios, tile_ratios, shared_t, full_t, dense_t = [], [], [], [], []
    out: dict[bool, list] = {}
    for _ in range(reps):
        t_full = timed(lambda: out.__setitem__(False, call(False)))
        t_shared = timed(lambda: out.__setitem__(True, call(True)))
        shared_t.append(t_shared)
        full_t.append(t_full)
        ratios.append(t_full / t_shared)
        if compare_tiles:
            dense_t.append(timed(lambda: call(True, tiles=False)))
            tile_ratios.append(dense_t[-1] / t_shared)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(out[True], out[False], strict=True))
    tv = [0.5 * float(np.abs(np.exp(a) - np.exp(b)).sum()) for a, b in zip(out[True], out[False], strict=True)]
    print(f"shared prefix: {statistics.median(shared_t):7.2f} s   full per option: {statistics.median(full_t):7.2f} s")
    print(f"max |logp_shared - logp_full| = {diff:.2e}, option-distribution TV mean {np.mean(tv):.1e} max "
          f"{max(tv):.1e} ({lm.dtype}; fp32 agrees within 1e-4, bf16 batch make-up moves rare options' "
          f"log-probs); load average {load_average()}")
    tiles = ""
    if compare_tiles:
        print(f"dense 512-token trees: {statistics.median(dense_t):7.2f} s (tiled trees of {tiled_max} tokens: "
              f"{statistics.median(shared_t):.2f} s)")
        tiles = f" tiled_vs_dense_trees={statistics.median(tile_ratios):.2f}"
    print(f"RESULT prefix_reuse_speedup={statistics.median(ratios):.2f}{tiles}")


if __name__ == "__main__":
    main()
