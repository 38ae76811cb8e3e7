"""Helpers for experiments on the fidelity benchmark (``benchmarks/experiments/``): dev fits of the text and
survey parts as the benchmark makes them, and what-if scoring of a simulated population's answers."""

from __future__ import annotations

import argparse
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import torch

from popsim.data import Population
from popsim.embed import SentenceEncoder
from popsim.eval.subgroups import cell_fidelity
from popsim.lm.hf import HFLanguageModel
from popsim.sim.calibration import OptionBias, answer_shares

from .calibration import redraw
from .config import SIZES, models
from .data import agent_rows, load_survey, split_items
from .survey import fit_survey_mop, population_model, real_answers, summarise_cells, wide_with_attributes
from .text import fit_text_mop


def dev_text_fits(default_text: str):
    """For the dev experiments (``benchmarks/experiments/``): parse ``--text`` / ``--seed``, load the models, and yield
    each dataset's quick-setting dev fit as a namespace (name, cfg, seed, lm, encoder, mop, pool_labels: the
    label of each exemplar, real, gen_ctx)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--text", default=default_text)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cfg, lm_encoder = dict(SIZES["quick"]["text"]), models("text")
    for name in args.text.split(","):
        mop, train, real, gen_ctx, _ = fit_text_mop(name, cfg, *lm_encoder, dev=True, seed=args.seed)
        label_of = dict(zip(train["context"], train["label"]))
        yield SimpleNamespace(name=name, cfg=cfg, seed=args.seed, lm=lm_encoder[0], encoder=lm_encoder[1], mop=mop,
                              pool_labels=np.asarray([label_of[x] for x in mop.exemplars_.inputs]), real=real,
                              gen_ctx=gen_ctx)


def analysis_setup(workdir: str) -> tuple[argparse.Namespace, dict, HFLanguageModel, SentenceEncoder, Path]:
    """What every survey analysis script starts with: ``--seed``, ``--surveys``, ``--protocols``; one torch
    thread (two surveys run side by side); the quick survey settings, models and a scratch folder."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--surveys", default="gss,nonvoters,flying")
    parser.add_argument("--protocols", default="ab")
    args = parser.parse_args()
    torch.set_num_threads(1)
    lm, encoder = models("survey")
    out = Path(workdir)
    out.mkdir(exist_ok=True)
    return args, dict(SIZES["quick"]["survey"]), lm, encoder, out


def dev_survey_fits(name: str, cfg: dict, lm, encoder, seed: int, workdir: Path, protocols: str = "ab"):
    """Analysis scripts' loop over one survey's dev split: per protocol, (pop, agents, protocol, seen item ids,
    asked item ids, MoP fitted on the seen items), as :func:`survey_benchmark` fits them with ``--dev``."""
    pop = load_survey(name, cfg, seed, workdir, True)
    seen_b, unseen_b = split_items(pop, seed + 1)
    every = {q.id for q in pop.questions}
    agents = agent_rows(pop, seed)
    for protocol, seen, asked in (("a", every, every), ("b", seen_b, unseen_b)):
        if protocol in protocols:
            yield pop, agents, protocol, seen, asked, fit_survey_mop(pop, seen, cfg, lm, encoder, seed,
                                                                     new_questions=protocol == "b")


def attribute_tv(answers: pd.DataFrame, pop: Population, agents: pd.DataFrame, options: dict, seed: int) -> str:
    """Mean TV over the population and single-attribute cells of long-form ``answers`` (agent, round, question,
    answer), the whole-population TV and the top answer's share, as one short string for analysis logs."""
    wide = wide_with_attributes(answers, pop, agents)
    cells = cell_fidelity(wide, real_answers(pop), options, list(pop.attributes), max_order=1, n_boot=10, seed=seed)
    s = summarise_cells(cells)
    dist = wide[list(options)].stack().value_counts(normalize=True)
    return f"{s['tv']:.3f} (all {s['tv_all']:.3f}; {dist.index[0]} {dist.iloc[0]:.2f})"


def raw_and_posthoc_tv(pop: Population, agents: pd.DataFrame, questions: list, method: str, mop, lm, seed: int,
                       seen: set[str], asked: set[str]) -> tuple[str, str, OptionBias]:
    """Analysis scripts: simulate ``method`` on ``questions``, fit post-hoc option offsets to its answers on the
    ``seen`` items (against the training respondents' weighted shares there), and score its answers to the
    ``asked`` items raw and with the offsets, on the same answer streams: (raw, post-hoc, offsets)."""
    target = answer_shares(pop.train, [q for q in questions if q.id in seen], pop.train["weight"].to_numpy())
    options = {q.id: q.option_labels for q in questions if q.id in asked}
    model = population_model(pop, agents, questions, method, mop, lm, seed)
    model.step()
    responses = model.responses()
    probs = [(tuple(q.option_labels), np.array([r.probs[o] for o in q.option_labels]))
             for r in responses[responses["question"].isin(seen)].itertuples()
             for q in [model.question_by_id[r.question]]]
    bias = OptionBias.fit(probs, target)
    asked_rows = responses[responses["question"].isin(asked)]

    def scored(offsets: OptionBias | None) -> str:
        reweigh = (lambda r, q, p: p) if offsets is None else (lambda r, q, p: offsets.adjust(q.option_labels, p))
        return attribute_tv(redraw(model, asked_rows, reweigh), pop, agents, options, seed)

    return scored(None), scored(bias), bias
