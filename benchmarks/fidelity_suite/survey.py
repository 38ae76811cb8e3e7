"""The survey part of the fidelity benchmark: per-subgroup TV and representativeness with bootstrap CIs, the
noise floor and the long-tail curve, under (a) new people (plus the hot-deck reference), (b) new questions and
(c) new questions on a new answer scale; every method raw and with the same post-hoc calibration
(``calibration.py``), and with ``ablation`` MoP's parts switched off one at a time on the same fit."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from popsim.baselines import hot_deck
from popsim.data import Population, nearest_questions, profile_text, survey_exemplars, survey_records
from popsim.eval.metrics import total_variation, weighted_distribution
from popsim.eval.subgroups import cell_fidelity, noise_floor_curve, respondent_table
from popsim.lm.loading import cache_dir
from popsim.mop import MixtureOfPersonas, PromptStyle
from popsim.sim.calibration import answer_shares
from popsim.sim.model import PopulationModel

from .calibration import calibrated, calibration_rows, fit_calibration
from .config import SURVEY_METHODS, estimator_settings
from .data import SURVEYS, agent_rows, load_survey, split_items, split_scales


def fit_survey_mop(pop: Population, seen: set[str], cfg: dict, lm, encoder, seed: int, *,
                   new_questions: bool = False, nearest: str = "") -> MixtureOfPersonas:
    """Fit on the ``seen`` items; ``new_questions`` (protocol b) trains as agents will be asked: never a
    question the exemplar's transcript answers (``mask_answered``) if ``cfg["mask_answered_b"]`` is on.

    ``cfg["exemplar_asked"]``: protocol (a) fits (every asked item seen) take the shipped survey's settings for
    new people: a transcript of the exemplar's answer to the asked question alone (``mop.exemplar_asked``,
    ``exemplar_questions: 1``) and the calibrated exemplar gate; (b) and (c) have no such answer to show.
    ``nearest`` (``cfg["exemplar_nearest"]`` holds the protocol): the same, showing the exemplar's answer to
    the most similar *other* seen question, on the asked one's scale (``"b"``) or on another scale (``"c"``:
    held-out scales have no answer to copy, so the seen items are trained and calibrated without one too), in
    training, in the calibration population and for the held-out items alike."""
    asked = (cfg.get("exemplar_asked", False) and not new_questions) or bool(nearest)
    stand_ins = nearest_questions(pop.questions, seen, encoder, same_scale=nearest == "b") if nearest else None
    records = survey_records(pop, question_ids=seen)
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
                     seed: int) -> PopulationModel:
    """The simulated population of ``agents`` for one method, before its step (analysis scripts reuse it)."""
    attr_cols = [f"attr_{a}" for a in pop.attributes]
    texts = [profile_text(r, pop.attributes) for _, r in agents.iterrows()]
    style = mop.style_ if mop is not None else PromptStyle.survey()
    return PopulationModel(questions=questions, lm=lm, mop=mop, profiles=agents[attr_cols].reset_index(drop=True),
                           profile_texts=texts, method=method, style=style, seed=seed, progress=False)


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


def summarise_cells(cells: pd.DataFrame) -> dict:
    """A method's summary row: mean TV etc. over the population and single-attribute cells, the whole-population
    TV with its CI and noise floor, and how many cells are worse than the floor."""
    ok = cells[~cells["suppressed"]]
    first = ok[ok["order"] <= 1]
    top = ok[ok["cell"] == "all"].iloc[0]
    return {"tv": float(first["tv"].mean()), "representativeness": float(first["representativeness"].mean()),
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


def scale_shares(pop: Population, agents: pd.DataFrame, questions: list, seen: set[str],
                 rng: np.random.Generator) -> pd.DataFrame:
    """The no-LM reference: each agent answers each asked item by a draw from its answer scale's pooled, weighted
    training shares over the seen items (uniform on a scale no seen item uses). That is all a calibration knows
    without an LM, so a method's TV below this one's is what its LM adds."""
    train = pop.train
    weights = train["weight"].to_numpy(float) if "weight" in train.columns else None
    pooled = answer_shares(train, [q for q in pop.questions if q.id in seen], weights)
    out = agents[[f"attr_{a}" for a in pop.attributes]].reset_index(drop=True).copy()
    out.insert(0, "agent", np.arange(len(out)))
    for q in questions:
        scale = list(q.option_labels)
        share = pooled.get(tuple(scale), np.full(len(scale), 1 / len(scale)))
        out[q.id] = rng.choice(np.asarray(scale, dtype=object), size=len(out), p=share / share.sum())
    return out


def protocol_items(pop: Population, protocol: str, seed: int) -> tuple[set[str], set[str]]:
    """(seen, asked) item ids: (a) all and all, (b) a seeded third held out, (c) whole answer scales held out."""
    if protocol == "a":
        every = {q.id for q in pop.questions}
        return every, every
    return (split_items if protocol == "b" else split_scales)(pop, seed)


def _simulated(pop, agents, questions, method, mop, lm, seed, change) -> PopulationModel:
    """A stepped population of ``agents`` for ``method`` (``change``, an ablation, applied before the step)."""
    model = population_model(pop, agents, questions, method, mop, lm, seed)
    if change is not None:
        change(model, np.random.default_rng([seed, 17]))
    model.step()
    return model


def survey_benchmark(name: str, cfg: dict, lm, encoder, *, dev: bool, seed: int, out: Path, log):
    """One survey under protocols (a), (b), (c): (summary, cells, noise curve, shares); one summary row per
    (protocol, method, calibration) with calibration ``none`` (raw) or ``posthoc`` (:mod:`.calibration`)."""
    pop = load_survey(name, cfg, seed, out, dev)
    split_seed = seed + (1 if dev else 0)
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
        mop = fit_survey_mop(pop, seen, cfg, lm, encoder, seed, new_questions=protocol != "a",
                             nearest=protocol if protocol in cfg.get("exemplar_nearest", "") else "")
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
        for variant, method, change in variants:
            t = time.perf_counter()
            model = _simulated(pop, agents, questions, method, mop, lm, seed, change)
            synths[(variant, "none")] = wide_with_attributes(model.responses(), pop, agents)
            note = ""
            if cal_rows is not None:
                cal_model = _simulated(pop, cal_rows, seen_questions, method, mop, lm, seed, change)
                transfer = cfg.get("calibration_transfer", False) and protocol != "a"
                cal = fit_calibration(cal_model, cal_rows, pop, seen,
                                      hold_out={"b": "items", "c": "scales"}[protocol] if transfer else "")
                synths[(variant, "posthoc")] = wide_with_attributes(calibrated(model, cal), pop, agents)
                note = f"; calibration {cal.describe()}"
            log(f"[{name}/{protocol}] {variant:>16} simulated in {time.perf_counter() - t:.0f} s{note}")
        if protocol == "a":  # the hot-deck copies real answers: the same rows under either calibration
            donors = pop.train.rename(columns={f"q_{q}": q for q in qmap})
            attr_cols = [f"attr_{a}" for a in attrs]
            deck = hot_deck(donors, agents[attr_cols], [f"attr_{a}" for a in SURVEYS[name]], list(qmap),
                            np.random.default_rng([seed, 5]))
            for calibration in {c for _, c in synths}:
                synths[("hot-deck", calibration)] = deck
        shares = scale_shares(pop, agents, questions, seen, np.random.default_rng([seed, 6]))
        for calibration in {c for _, c in synths}:  # no LM: nothing to calibrate either
            synths[("scale-shares", calibration)] = shares
        for (method, calibration), synth in synths.items():
            keys = {"dataset": name, "protocol": protocol, "method": method, "calibration": calibration}
            cells = _keyed(cell_fidelity(synth, real, options, attrs, max_order=cfg["max_order"],
                                         n_boot=cfg["n_boot"], seed=seed), keys)
            all_cells.append(cells)
            all_shares.append(_keyed(question_shares(synth, real, options), keys))
            s = summarise_cells(cells)
            dist = synth[list(options)].stack().value_counts(normalize=True)
            s.update({**keys, "top_answer": f"{dist.index[0]} ({dist.iloc[0]:.2f})"})
            summaries.append(s)
            log(f"[{name}/{protocol}] {method:>16} {calibration:>7}: TV {s['tv']:.3f} (all {s['tv_all']:.3f} "
                f"{s['tv_all_ci']}), repr {s['representativeness']:.3f}, floor {s['noise_floor']:.3f}")
    cells = pd.concat(all_cells, ignore_index=True)
    dist_real = real[list(qmap)].stack().value_counts(normalize=True)
    log(f"[{name}] real top answer: {dist_real.index[0]} ({dist_real.iloc[0]:.2f})")
    curve = noise_floor_curve(real, {q.id: q.option_labels for q in pop.questions}, [20, 50, 100, 200],
                              n_rep=50, seed=seed)
    curve.insert(0, "dataset", name)
    return pd.DataFrame(summaries), cells, curve, pd.concat(all_shares, ignore_index=True)
