"""The survey part of the fidelity benchmark: per-subgroup TV and representativeness with bootstrap CIs, the
noise floor and the long-tail curve, under (a) new people (plus the hot-deck reference), (b) new questions and
(c) new questions on a new answer scale; every method raw and with the same post-hoc calibration
(``calibration.py``), and with ``ablation`` MoP's parts switched off one at a time on the same fit. Each cell is
scored on sampled answers and on expected shares (the mean of the agents' answer distributions; section below)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from popsim.baselines import hot_deck
from popsim.data import Population, nearest_questions, profile_text, survey_exemplars, survey_records
from popsim.eval.metrics import total_variation, weighted_distribution
from popsim.eval.subgroups import cell_fidelity, cell_question_fidelity, noise_floor_curve, respondent_table
from popsim.lm.loading import cache_dir
from popsim.mop import MixtureOfPersonas, PromptStyle
from popsim.sim.calibration import answer_shares
from popsim.sim.model import PopulationModel

from .calibration import calibrated, calibration_rows, fit_calibration
from .config import SURVEY_METHODS, estimator_settings
from .data import SURVEYS, agent_rows, load_survey, split_items, split_scales

HOT_DECK_DRAWS = 100  # draws of the hot-deck averaged for its expected shares


def protocol_option_order(cfg: dict, protocol: str) -> str:
    """The protocol's option order (``survey.option_order`` for the protocols in ``survey.option_order_protocols``,
    else unlisted): every method, its training records and its calibration population alike."""
    return cfg.get("option_order", "unlisted") if protocol in cfg.get("option_order_protocols", "abc") else "unlisted"


def fit_survey_mop(pop: Population, seen: set[str], cfg: dict, lm, encoder, seed: int, *,
                   new_questions: bool = False, nearest: str = "", order: str = "unlisted") -> MixtureOfPersonas:
    """Fit on the ``seen`` items; ``new_questions`` (protocol b) trains as agents will be asked: never a
    question the exemplar's transcript answers (``mask_answered``) if ``cfg["mask_answered_b"]`` is on.

    ``cfg["exemplar_asked"]``: protocol (a) fits (every asked item seen) take the shipped survey's settings for
    new people: a transcript of the exemplar's answer to the asked question alone (``mop.exemplar_asked``,
    ``exemplar_questions: 1``) and the calibrated exemplar gate; (b) and (c) have no such answer to show.
    ``nearest`` (``cfg["exemplar_nearest"]`` holds the protocol): the same, showing the exemplar's answer to
    the most similar *other* seen question, on the asked one's scale (``"b"``) or on another scale (``"c"``:
    held-out scales have no answer to copy, so the seen items are trained and calibrated without one too), in
    training, in the calibration population and for the held-out items alike. ``order``: how the training
    records show the options (:func:`protocol_option_order`)."""
    asked = (cfg.get("exemplar_asked", False) and not new_questions) or bool(nearest)
    stand_ins = nearest_questions(pop.questions, seen, encoder, same_scale=nearest == "b") if nearest else None
    records = survey_records(pop, question_ids=seen, option_order=order, seed=seed)
    pool = survey_exemplars(pop, cfg["n_exemplars"], n_questions=1 if asked else cfg["exemplar_questions"],
                            seed=seed, question_ids=seen, cover_scales=cfg.get("exemplar_cover_scales", False),
                            asked=asked, stand_ins=stand_ins)
    style = PromptStyle.survey()
    if "instruction" in cfg:
        style = replace(style, instruction=cfg["instruction"])
    settings = {**estimator_settings(cfg), **({"calibrate_exemplars": True} if asked else {})}
    model = MixtureOfPersonas(lm, encoder, n_personas=cfg["n_personas"], style=style, **settings,
                              mask_answered=new_questions and cfg["mask_answered_b"],
                              cache_path=cache_dir() / "scores-survey.sqlite", random_state=seed, verbose=False)
    return model.fit(records, pool)


def population_model(pop: Population, agents: pd.DataFrame, questions: list, method: str, mop, lm,
                     seed: int, option_order: str = "unlisted") -> PopulationModel:
    """The simulated population of ``agents`` for one method, before its step (analysis scripts reuse it);
    ``option_order`` as ``simulation.option_order`` (:mod:`popsim.option_order`)."""
    attr_cols = [f"attr_{a}" for a in pop.attributes]
    texts = [profile_text(r, pop.attributes) for _, r in agents.iterrows()]
    style = mop.style_ if mop is not None else PromptStyle.survey()
    return PopulationModel(questions=questions, lm=lm, mop=mop, profiles=agents[attr_cols].reset_index(drop=True),
                           profile_texts=texts, method=method, style=style, seed=seed, progress=False,
                           option_order=option_order)


def wide_with_attributes(answers: pd.DataFrame, pop: Population, agents: pd.DataFrame) -> pd.DataFrame:
    """One row per agent (its answers) with the agent's ``attr_*`` columns beside them."""
    wide = respondent_table(answers)
    for c in [f"attr_{a}" for a in pop.attributes]:
        wide[c] = agents[c].to_numpy()[wide["agent"].to_numpy()]
    return wide


def simulate(pop: Population, agents: pd.DataFrame, questions: list, method: str, mop, lm, seed: int) -> pd.DataFrame:
    """One step of ``method``'s simulated population: one row per agent, its answers and ``attr_*`` columns."""
    model = population_model(pop, agents, questions, method, mop, lm, seed)
    model.step()
    return wide_with_attributes(model.responses(), pop, agents)


def real_answers(pop: Population) -> pd.DataFrame:
    """The held-out respondents with their answer columns named by question id (``q_X`` -> ``X``)."""
    return pop.test.rename(columns={c: c.removeprefix("q_") for c in pop.test.columns if c.startswith("q_")})


def _keyed(frame: pd.DataFrame, keys: dict[str, str]) -> pd.DataFrame:
    """``frame`` with ``keys`` as its first columns (which dataset, protocol and method its rows describe)."""
    return pd.concat([pd.DataFrame(keys, index=frame.index), frame], axis=1)


def question_shares(synth: pd.DataFrame, real: pd.DataFrame, options: dict[str, list]) -> pd.DataFrame:
    """Whole-population answer shares per question and option, real (weighted) beside simulated, with each
    question's TV: where a method's summary TV comes from (which items, which options)."""
    weights = real["weight"].to_numpy(float) if "weight" in real.columns else None
    rows = []
    for q, opts in options.items():
        pr = weighted_distribution(real[q].to_numpy(object), opts, weights)
        ps = weighted_distribution(synth[q].to_numpy(object), opts)
        tv = total_variation(pr, ps)
        rows += [{"question": q, "option": o, "real_share": a, "synth_share": b, "question_tv": tv}
                 for o, a, b in zip(opts, pr, ps, strict=True)]
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------- expected shares
# Expected answer shares: a simulated cell's shares as the mean of its agents' answer distributions, instead of
# the shares of one sampled answer per agent.
#
# Both estimate the same thing, the answer shares of a population of these agents, but the sampled one adds the
# noise of one draw per agent: at the quick benchmark's 50-70 agents per survey it moved a method's mean TV by
# sd 0.016, up to 0.05 (dev, 2026-12-07), as much as the differences between methods.
# The best baseline is the minimum over four noisy baselines, so under sampling it also gains a selection bonus
# MoP does not get. Expected shares remove the simulator's draw (the real held-out sample's noise stays, the same
# for every method). Each method's distributions are the ones its answers are drawn from: the LM methods' option
# probabilities (after calibration when calibrated), the no-LM reference's pooled shares, and the hot-deck's
# donors (``n_draws`` draws of the deck, averaged).

Distributions = dict[str, np.ndarray]  # question id -> (agents x options) answer distributions


def model_distributions(responses: pd.DataFrame, options: Mapping[str, Sequence], n_agents: int,
                        adjust: Callable[[Sequence, np.ndarray], np.ndarray] | None = None) -> Distributions:
    """Each agent's option distribution per question from a stepped model's ``responses()`` (its ``probs``),
    through ``adjust(options, probs)`` (a calibration) when given."""
    out = {q: np.full((n_agents, len(opts)), np.nan) for q, opts in options.items()}
    for r in responses.itertuples():
        if r.question not in out or r.probs is None:
            continue
        opts = options[r.question]
        p = np.array([r.probs[o] for o in opts], dtype=float)
        p = np.asarray(adjust(opts, p), dtype=float) if adjust is not None else p
        out[r.question][r.agent] = p / p.sum()
    return out


def draw_distributions(draw: Callable[[int], pd.DataFrame], options: Mapping[str, Sequence], n_agents: int,
                       n_draws: int) -> Distributions:
    """The share of each option among ``n_draws`` wide tables ``draw(i)`` (one row per agent, in agent order)."""
    out = {q: np.zeros((n_agents, len(opts))) for q, opts in options.items()}
    for i in range(n_draws):
        table = draw(i)
        for q, opts in options.items():
            answers = table[q].to_numpy(object)
            for k, o in enumerate(opts):
                out[q][:, k] += answers == o
    return {q: d / n_draws for q, d in out.items()}


def fixed_distributions(shares: Mapping[str, np.ndarray], n_agents: int) -> Distributions:
    """Every agent with the same distribution per question (the no-LM reference's pooled shares)."""
    return {q: np.tile(np.asarray(s, dtype=float) / np.sum(s), (n_agents, 1)) for q, s in shares.items()}


def expected_cell_tv(dists: Distributions, agents: pd.DataFrame, real: pd.DataFrame,
                     options: Mapping[str, Sequence], attributes: Sequence[str], *, max_order: int) -> pd.DataFrame:
    """Question-mean TV per cell (``cell``, ``tv_expected``) between the real cell's weighted shares and the mean
    of its agents' distributions: each agent enters once per option, weighted by that option's probability, so
    :func:`popsim.eval.subgroups.cell_question_fidelity` computes the cells and TVs exactly as for answers."""
    attr_cols = [f"attr_{a}" for a in attributes]
    per_question = []
    for q, opts in options.items():
        d = dists[q]
        answered = ~np.isnan(d).any(axis=1)
        rows = np.repeat(np.flatnonzero(answered), len(opts))
        synth = agents[attr_cols].iloc[rows].reset_index(drop=True)
        synth[q] = np.tile(np.asarray(opts, dtype=object), int(answered.sum()))
        synth["weight"] = d[answered].ravel()
        fid = cell_question_fidelity(synth, real, {q: opts}, attributes, max_order=max_order, min_n=0)
        per_question.append(fid[["cell", "question", "tv"]])
    long = pd.concat(per_question, ignore_index=True)
    return long.groupby("cell", sort=False)["tv"].mean().rename("tv_expected").reset_index()


def summarise_cells(cells: pd.DataFrame, shares: str = "sampled") -> dict:
    """A method's summary row: mean TV etc. over the population and single-attribute cells, the whole-population
    TV with its CI and noise floor, and how many cells are worse than the floor. ``tv`` is the mean of
    ``tv_expected`` (expected shares, below) with ``shares="expected"``, else of the sampled answers' ``tv``; both are
    kept as ``tv_expected`` and ``tv_sampled``."""
    ok = cells[~cells["suppressed"]]
    first = ok[ok["order"] <= 1]
    top = ok[ok["cell"] == "all"].iloc[0]
    means = {"tv_sampled": float(first["tv"].mean())}
    if "tv_expected" in first:
        means["tv_expected"] = float(first["tv_expected"].mean())
    return {"tv": means["tv_expected" if shares == "expected" else "tv_sampled"], **means,
            "representativeness": float(first["representativeness"].mean()),
            "noise_floor": float(first["noise_floor_tv"].mean()), "tv_all": float(top["tv"]),
            "tv_all_ci": f"[{top['tv_ci_low']:.3f}, {top['tv_ci_high']:.3f}]",
            "noise_all": float(top["noise_floor_tv"]), "n_cells": int(len(ok)),
            "worse_than_floor": int(ok["worse_than_floor"].sum()), "tv_max_cell": float(ok["tv"].max())}


def _uniform_gate(model: PopulationModel, rng: np.random.Generator) -> None:
    """Ablation: persona and exemplar drawn uniformly, each persona keeping its learned tau and MoP's offsets."""
    taus = model.mop.temperatures_
    for a in model.agents:
        a.persona = int(rng.integers(len(taus)))
        a.exemplar = int(rng.integers(len(model.mop.exemplars_)))
        a.temperature = float(taus[a.persona])


def _no_offsets(model: PopulationModel, rng: np.random.Generator) -> None:
    """Ablation: MoP's draws without its internal learned option offsets."""
    model.mop_option_bias = None


def _tau_fixed(model: PopulationModel, rng: np.random.Generator) -> None:
    """Ablation: MoP's draws at the initial temperature instead of the learned tau_k."""
    for a in model.agents:
        a.temperature = float(model.mop.settings_["tau_init"])


# name -> (method the population runs, change made to it before its step)
ABLATIONS = {"mop-uniform-gate": ("mop", _uniform_gate), "mop-no-offsets": ("mop", _no_offsets),
             "mop-tau-fixed": ("mop", _tau_fixed)}


def pooled_scale_shares(pop: Population, questions: list, seen: set[str]) -> dict[str, np.ndarray]:
    """Per asked item, its answer scale's pooled, weighted training shares over the seen items (uniform on a
    scale no seen item uses): the no-LM reference's answer distribution."""
    train = pop.train
    weights = train["weight"].to_numpy(float) if "weight" in train.columns else None
    pooled = answer_shares(train, [q for q in pop.questions if q.id in seen], weights)
    shares = {}
    for q in questions:
        share = pooled.get(tuple(q.option_labels), np.full(len(q.option_labels), 1 / len(q.option_labels)))
        shares[q.id] = share / share.sum()
    return shares


def stand_in_shares(pop: Population, questions: list, seen: set[str], encoder) -> dict[str, np.ndarray]:
    """Per asked item, the weighted training shares of its most similar seen item on the same scale (the
    stand-in whose answer protocol (b)'s exemplars show; :func:`pooled_scale_shares` when there is none): what
    copying the neighbour's answer gives a population at best, with no LM and no demographics."""
    train = pop.train
    weights = train["weight"].to_numpy(float) if "weight" in train.columns else None
    near = nearest_questions(pop.questions, seen, encoder, same_scale=True, k=1)
    pooled = pooled_scale_shares(pop, questions, seen)
    shares = {}
    for q in questions:
        share = (weighted_distribution(train[f"q_{near[q.id][0]}"].to_numpy(object), q.option_labels, weights)
                 if near[q.id] else pooled[q.id])
        shares[q.id] = share / share.sum() if share.sum() > 0 else pooled[q.id]
    return shares


def share_draws(pop: Population, agents: pd.DataFrame, questions: list, shares: Mapping[str, np.ndarray],
                rng: np.random.Generator) -> pd.DataFrame:
    """A no-LM reference's answers: each agent answers each asked item by a draw from ``shares`` (e.g.
    :func:`pooled_scale_shares`: all a calibration knows without an LM, so a method's TV below it is what its
    LM adds)."""
    out = agents[[f"attr_{a}" for a in pop.attributes]].reset_index(drop=True).copy()
    out.insert(0, "agent", np.arange(len(out)))
    for q in questions:
        out[q.id] = rng.choice(np.asarray(q.option_labels, dtype=object), size=len(out), p=shares[q.id])
    return out


def hot_deck_reference(pop: Population, name: str, agents: pd.DataFrame, options: dict[str, list],
                       seed: int) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Protocol (a)'s hot-deck: each agent copies a random training respondent of its subgroup
    (``SURVEYS[name]``); its answers and, from ``HOT_DECK_DRAWS`` further decks, its expected shares."""
    qids = [q.id for q in pop.questions]
    donors = pop.train.rename(columns={f"q_{q}": q for q in qids})
    recipients = agents[[f"attr_{a}" for a in pop.attributes]]
    by = [f"attr_{a}" for a in SURVEYS[name]]

    def deck(rng_key: list[int]) -> pd.DataFrame:
        return hot_deck(donors, recipients, by, qids, np.random.default_rng(rng_key))

    dists = draw_distributions(lambda i: deck([seed, 5, i]), options, len(agents), HOT_DECK_DRAWS)
    return deck([seed, 5]), dists


def protocol_items(pop: Population, protocol: str, seed: int) -> tuple[set[str], set[str]]:
    """(seen, asked) item ids: (a) all and all, (b) a seeded third held out, (c) whole answer scales held out."""
    if protocol == "a":
        every = {q.id for q in pop.questions}
        return every, every
    return (split_items if protocol == "b" else split_scales)(pop, seed)


def _simulated(pop, agents, questions, method, mop, lm, seed, change, option_order) -> PopulationModel:
    """A stepped population of ``agents`` for ``method`` (``change``, an ablation, applied before the step)."""
    model = population_model(pop, agents, questions, method, mop, lm, seed, option_order)
    if change is not None:
        change(model, np.random.default_rng([seed, 17]))
    model.step()
    return model


def survey_benchmark(name: str, cfg: dict, lm, encoder, *, dev: bool, seed: int, out: Path, log):
    """One survey under protocols (a), (b), (c): (summary, cells, noise curve, shares); one summary row per
    (protocol, method, calibration) with calibration ``none`` (raw) or ``posthoc`` (:mod:`.calibration`)."""
    pop = load_survey(name, cfg, seed, out, dev)
    # which items (b) and (c) hold out; item_split > 0 draws another split of the same respondents (split variance)
    split_seed = seed + (1 if dev else 0) + 100 * cfg.get("item_split", 0)
    qmap = {q.id: q for q in pop.questions}
    agents = agent_rows(pop, seed)
    real = real_answers(pop)
    attrs = list(pop.attributes)
    summaries, all_cells, all_shares = [], [], []
    log(f"[{name}] train {len(pop.train)} respondents, held-out {len(pop.test)}, agents {len(agents)}; "
        f"unseen items (b): {sorted(protocol_items(pop, 'b', split_seed)[1])}, "
        f"(c): {sorted(protocol_items(pop, 'c', split_seed)[1])}")
    for protocol in cfg["protocols"]:  # tuning one protocol: --set survey.protocols=b
        seen, asked = protocol_items(pop, protocol, split_seed)
        if not asked:
            log(f"[{name}/{protocol}] skipped: every item is on one answer scale, so no new scale to hold out")
            continue
        t = time.perf_counter()
        order = protocol_option_order(cfg, protocol)
        mop = fit_survey_mop(pop, seen, cfg, lm, encoder, seed, new_questions=protocol != "a",
                             nearest=protocol if protocol in cfg.get("exemplar_nearest", "") else "", order=order)
        log(f"[{name}/{protocol}] fitted in {time.perf_counter() - t:.0f} s; tau="
            f"{np.round(mop.temperatures_, 3).tolist()}; personas: {[p.text[:50] for p in mop.personas_]}")
        questions = [qmap[q] for q in qmap if q in asked]
        seen_questions = [qmap[q] for q in qmap if q in seen]
        options = {q.id: q.option_labels for q in questions}
        cal_rows = calibration_rows(pop, mop, cfg["calibration_agents"], seed) if cfg["calibrate"] else None
        # a subset of the methods (--set survey.methods=mop,uniform), e.g. for a quick check; default all
        methods = cfg["methods"].split(",") if cfg.get("methods") else SURVEY_METHODS
        variants = [(m, m, None) for m in methods]
        if cfg.get("ablation"):
            variants += [(v, method, change) for v, (method, change) in ABLATIONS.items()]
        synths: dict[tuple[str, str], pd.DataFrame] = {}
        dists = {}  # (method, calibration) -> each agent's answer distributions (expected shares)
        for variant, method, change in variants:
            t = time.perf_counter()
            model = _simulated(pop, agents, questions, method, mop, lm, seed, change, order)
            responses = model.responses()  # built once: raw answers, their distributions, calibrated ones
            synths[(variant, "none")] = wide_with_attributes(responses, pop, agents)
            dists[(variant, "none")] = model_distributions(responses, options, len(agents))
            note = ""
            if cal_rows is not None:
                cal_model = _simulated(pop, cal_rows, seen_questions, method, mop, lm, seed, change, order)
                transfer = cfg.get("calibration_transfer", False) and protocol != "a"
                cal = fit_calibration(cal_model, cal_rows, pop, seen,
                                      hold_out={"b": "items", "c": "scales"}[protocol] if transfer else "")
                synths[(variant, "posthoc")] = wide_with_attributes(calibrated(model, cal), pop, agents)
                dists[(variant, "posthoc")] = model_distributions(responses, options, len(agents), cal.adjust)
                note = f"; calibration {cal.describe()}"
            log(f"[{name}/{protocol}] {variant:>16} simulated in {time.perf_counter() - t:.0f} s{note}")
        if protocol == "a":  # the hot-deck copies real answers: the same rows under either calibration
            deck, deck_dists = hot_deck_reference(pop, name, agents, options, seed)
            for calibration in sorted({c for _, c in synths}):
                synths[("hot-deck", calibration)] = deck
                dists[("hot-deck", calibration)] = deck_dists
        references = {"scale-shares": pooled_scale_shares(pop, questions, seen)}
        if protocol == "b":  # what copying the neighbour's answer gives at best (no LM)
            references["stand-in-shares"] = stand_in_shares(pop, questions, seen, encoder)
        for i, (reference, ref_shares) in enumerate(references.items()):
            answers = share_draws(pop, agents, questions, ref_shares, np.random.default_rng([seed, 6 + 20 * i]))
            for calibration in sorted({c for _, c in synths}):  # no LM: nothing to calibrate either
                synths[(reference, calibration)] = answers
                dists[(reference, calibration)] = fixed_distributions(ref_shares, len(agents))
        for (method, calibration), synth in synths.items():
            keys = {"dataset": name, "protocol": protocol, "method": method, "calibration": calibration}
            cells = cell_fidelity(synth, real, options, attrs, max_order=cfg["max_order"], n_boot=cfg["n_boot"],
                                  seed=seed)
            expected = expected_cell_tv(dists[(method, calibration)], agents, real, options, attrs,
                                        max_order=cfg["max_order"])
            cells = _keyed(cells.merge(expected, on="cell", how="left"), keys)
            all_cells.append(cells)
            all_shares.append(_keyed(question_shares(synth, real, options), keys))
            s = summarise_cells(cells, cfg["shares"])
            dist = synth[list(options)].stack().value_counts(normalize=True)
            s.update({**keys, "top_answer": f"{dist.index[0]} ({dist.iloc[0]:.2f})"})
            summaries.append(s)
            log(f"[{name}/{protocol}] {method:>16} {calibration:>7}: TV {s['tv']:.3f} (sampled {s['tv_sampled']:.3f}; "
                f"all {s['tv_all']:.3f} "
                f"{s['tv_all_ci']}), repr {s['representativeness']:.3f}, floor {s['noise_floor']:.3f}")
    if not all_cells:  # e.g. GSS under --set survey.protocols=c: nothing of this survey to score
        return pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), pd.DataFrame()
    cells = pd.concat(all_cells, ignore_index=True)
    dist_real = real[list(qmap)].stack().value_counts(normalize=True)
    log(f"[{name}] real top answer: {dist_real.index[0]} ({dist_real.iloc[0]:.2f})")
    curve = noise_floor_curve(real, {q.id: q.option_labels for q in pop.questions}, [20, 50, 100, 200],
                              n_rep=50, seed=seed)
    curve.insert(0, "dataset", name)
    return pd.DataFrame(summaries), cells, curve, pd.concat(all_shares, ignore_index=True)
