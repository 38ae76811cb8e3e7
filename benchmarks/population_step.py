"""One population step: popsim's batched, prefix-shared step vs one LM call per agent per question.

Workload: ``scenarios/survey.yaml`` (GSS 2018, 18 multiple-choice items with 3 options each), agents with
a real respondent's profile, a persona (~40 tokens) and a real respondent's 5-answer transcript as
exemplar, so each agent's prompt shares a ~150-token prefix across its 18 questions. Both sides run the
embedded SmolLM2-135M-Instruct in fp32 (so the ratio is the algorithm's, not the dtype's) on the same
backend with the same prompts:

* ``batched``: ``PopulationModel.step()`` - gather every agent's requests, dedupe, one ``option_logprobs``
  call per ``requests_per_call`` requests; the backend encodes each agent's shared prefix once and every
  question/option on top of its KV cache;
* ``per_agent``: what LLM-agent frameworks do - each agent asks each question on its own, one
  ``option_logprobs`` call per (agent, question) (the backend still shares the prompt across the
  options inside that call, so this baseline is already better than scoring each option separately).

The per-agent loop may be timed on a subset of agents and scaled linearly (``--loop-agents``). The
answers of both sides are compared (max absolute difference of option probabilities) so the speed-up
is for the same result. Last line::

    RESULT batched_vs_per_agent=X
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from common import load_average, survey_workload, timed

from popsim.embed import SentenceEncoder
from popsim.lm.hf import HFLanguageModel
from popsim.sim.model import PopulationModel

MODEL = "smollm2-135m-instruct"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--agents", type=int, default=None, help="population size (default 32, quick 12)")
    ap.add_argument("--loop-agents", type=int, default=None,
                    help="time the per-agent loop on this many agents and scale (default 8, quick 4)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads (default: one per core); 1 is far less sensitive to other "
                    "processes competing for the cores, which slow small per-agent calls much more than batches")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    n_agents = args.agents or (12 if args.quick else 32)
    loop_agents = min(n_agents, args.loop_agents or (4 if args.quick else 8))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}; load average {load_average()}")

    lm = HFLanguageModel(MODEL, dtype="fp32")
    encoder = SentenceEncoder()
    scenario, _, mop, profiles, texts = survey_workload(lm, encoder, n_agents)
    questions = [q for q in scenario.questions if not q.free_text]

    def population() -> PopulationModel:
        return PopulationModel(questions=questions, lm=lm, mop=mop, profiles=profiles, profile_texts=texts,
                               method="uniform", seed=scenario.seed, progress=False)

    probe = population()
    agent0 = probe.by_id[0]
    prompts = [lm.render(probe.prompt_for(agent0, q)) for q in questions]
    ids = [lm.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    shared = next(i for i in range(min(map(len, ids))) if len({tuple(s[: i + 1]) for s in ids}) > 1)
    mean_len = np.mean([len(s) for s in ids])
    print(f"{n_agents} agents x {len(questions)} questions x {len(questions[0].option_labels)} options; "
          f"agent 0: shared prefix {shared} tokens, mean prompt {mean_len:.0f} tokens")

    population().step()  # warm-up (allocator, kernels)
    model = population()
    t_batched = timed(model.step)
    calls = model.lm_calls

    loop = population()
    agents = [loop.by_id[i] for i in range(loop_agents)]

    def per_agent() -> list[np.ndarray]:
        out = []
        for agent in agents:
            for q in questions:
                lp = lm.option_logprobs([loop.prompt_for(agent, q)], [list(q.option_labels)],
                                        temperature=[agent.temperature])[0]
                out.append(np.exp(lp - np.logaddexp.reduce(lp)))
        return out

    result: list[np.ndarray] = []
    t_loop = timed(lambda: result.extend(per_agent()))
    t_per_agent = t_loop * n_agents / loop_agents
    batched_probs = [np.array([model.by_id[a.person_id].probs[(1, q.id)][o] for o in q.option_labels])
                     for a in agents for q in questions]
    diff = max(float(np.abs(a - b).max()) for a, b in zip(result, batched_probs, strict=True))

    print(f"batched   : {t_batched:8.2f} s  ({calls} LM calls)")
    print(f"per agent : {t_per_agent:8.2f} s  ({n_agents * len(questions)} LM calls; timed on {loop_agents} "
          f"agents, scaled)")
    print(f"max |p_batched - p_per_agent| = {diff:.2e}; load average {load_average()}")
    print(f"RESULT batched_vs_per_agent={t_per_agent / t_batched:.2f}")


if __name__ == "__main__":
    main()
