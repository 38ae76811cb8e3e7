"""One scenario end to end: load data -> fit (or reuse) MoP -> simulate (resumable) -> summarise.

A run directory is the unit of output and of resumption:

    manifest.json      config, seed, config hash, versions, timings
    mop/               the fitted model (gate.safetensors + mop.json), reused while data/mop/encoder match
    personas.json      persona texts, sizes, sources and attribute composition
    option_bias.json   learned option offsets per answer scale (``simulation.option_bias: learned``)
    parts/             answers flushed chunk by chunk while simulating (atomic files)
    responses.parquet  one row per (agent, round, question) with option probabilities and attributes
    agents.parquet     one row per agent: profile, persona, exemplar, temperature
    summary.csv        answer shares per question x subgroup, with n (and summary.parquet)
    heldout.parquet    the real held-out respondents (raked weights with margins), or texts (reviews)
    population.json    target vs achieved margins, design effect and effective n (``population:`` set)
    text_fidelity.csv  reviews: generated vs held-out real texts beside the real-vs-real floor (and .json)

Every file is written atomically; a run stopped by Ctrl-C or kill -9 continues where it stopped when the
same command is rerun, losing and duplicating nothing. The folder's bookkeeping (who may write in it, the
manifest, the fit key, the parts and resume) has one owner, :class:`popsim.rundir.RunDirectory`; this module
decides what goes in it.
"""

from __future__ import annotations

import json
import platform
import time
import warnings
from dataclasses import dataclass, field, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from popsim.config import QuestionSpec, Scenario, config_hash
from popsim.data import (
    Population,
    load_population,
    profile_text,
    review_records,
    review_split,
    survey_exemplars,
    survey_records,
)
from popsim.embed import SentenceEncoder
from popsim.exceptions import DataError, ModelLoadError, PopsimError
from popsim.io import atomic_write_json, atomic_write_parquet, atomic_write_text
from popsim.lm import LanguageModel, load_lm
from popsim.lm.loading import cache_dir
from popsim.mop import MixtureOfPersonas, PromptStyle
from popsim.mop.presets import resolve_preset
from popsim.population import AgentDraw, draw_agents
from popsim.questions import expand_items, rank_position
from popsim.rundir import RunDirectory, fit_key
from popsim.sim.arms import arm_plans, assign_arms
from popsim.sim.calibration import OptionBias, answer_shares
from popsim.sim.model import PopulationModel
from popsim.sim.network import build_network

__all__ = ["RunResult", "run", "fit", "fit_model", "saved_model", "check_run_dir", "learn_option_bias",
           "prepare_run_dir", "summarise"]


@dataclass
class RunResult:
    run_dir: Path
    responses: pd.DataFrame
    summary: pd.DataFrame
    timings: dict = field(default_factory=dict)
    lm_calls: int = 0


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("popsim", "torch", "transformers", "sentence-transformers", "mesa", "numpy", "pandas", "pyarrow",
                "safetensors", "scikit-learn"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def _checked_inputs(scenario: Scenario, *, needs_mop: bool) -> tuple[Path, Population | None]:
    """What `run` and `fit` check before writing anything: the run folder, the data and the persona count;
    also applies ``lm.threads`` (torch's thread count changes reduction order, so pinning it makes scores and
    samples bit-identical across machines). Returns the run folder and the survey population, if any."""
    run_dir = check_run_dir(scenario, scenario.run_dir)
    if scenario.lm.threads:
        torch.set_num_threads(scenario.lm.threads)
    population = load_population(scenario) if scenario.kind == "survey" else None
    n_personas = mop_estimator(scenario, None, None).n_personas
    if needs_mop and population is not None and scenario.mop.personas is None \
            and n_personas > len(population.train):
        raise DataError(f"mop.n_personas ({n_personas}) is more than the {len(population.train)} "
                        "training respondents to cluster; lower mop.n_personas or use more data (data.max_rows)")
    return run_dir, population


def fit(scenario: Scenario, *, verbose: bool = True) -> tuple[MixtureOfPersonas, Path]:
    """`popsim fit`: fit and save the scenario's MoP in ``<run_dir>/mop`` without simulating (the inputs are
    checked as in :func:`run`, before anything is written). Returns the model and its run folder."""
    run_dir, population = _checked_inputs(scenario, needs_mop=True)
    lm = _load_lm(scenario)
    encoder = SentenceEncoder(scenario.encoder.name, cache_path=cache_dir() / "embeddings.sqlite")
    prepare_run_dir(scenario, run_dir)
    return fit_model(scenario, lm, encoder, run_dir, population, verbose=verbose), run_dir


def check_run_dir(scenario: Scenario, run_dir: Path) -> Path:
    """Check ``run_dir`` can hold this scenario's run, writing nothing (:meth:`RunDirectory.check`)."""
    return RunDirectory(run_dir).check(config_hash(scenario), scenario.model_dump(mode="json"))


def prepare_run_dir(scenario: Scenario, run_dir: Path) -> Path:
    """Check the run directory, create it, prove it writable, sweep a killed run's temporary files."""
    return RunDirectory(run_dir).prepare(config_hash(scenario), scenario.model_dump(mode="json"))


def _manifest(scenario: Scenario, run_dir: Path, **extra) -> None:
    """Record what reproduces this run (config, seed, versions, thread count) and ``extra`` (status, ...)."""
    RunDirectory(run_dir).write_manifest(
        scenario=scenario.name, config_hash=config_hash(scenario), seed=scenario.seed,
        config=scenario.model_dump(mode="json"), versions=_versions(), torch_threads=torch.get_num_threads(),
        **extra)


def _load_lm(scenario: Scenario) -> LanguageModel:
    cfg = scenario.lm
    return load_lm(cfg.name, device=cfg.device, dtype=cfg.dtype, batch_tokens=cfg.batch_tokens,
                   compile=cfg.compile)


def prompt_style(scenario: Scenario) -> PromptStyle:
    """The prompt wording a scenario asks for: survey transcripts, or the paper's review prompt with the
    layout options of its ``reviews:`` section."""
    if scenario.kind == "survey":
        return PromptStyle.survey()
    style = PromptStyle.reviews()
    if scenario.reviews is None:
        return style
    system = style.system if scenario.reviews.system is None else scenario.reviews.system
    return replace(style, persona_in_system=scenario.reviews.persona_in_system,
                   exemplar_turn=scenario.reviews.exemplar_turn, system=system)


def saved_model(scenario: Scenario, lm: LanguageModel, encoder: SentenceEncoder,
                run_dir: Path) -> MixtureOfPersonas | None:
    """The model in ``run_dir/mop`` if it was fitted with this scenario's settings, else None.

    A saved model that fails to load (truncated ``gate.safetensors``, garbled ``mop.json``) raises
    :class:`RunDirectoryError` naming the file, rather than being refitted silently: the user decides
    whether to restore it or delete ``run_dir/mop`` to refit.
    """
    folder = RunDirectory(run_dir)
    if folder.has_fit(fit_key(scenario)):
        return MixtureOfPersonas.load(folder.mop_dir, lm=lm, encoder=encoder)
    return None


def mop_estimator(scenario: Scenario, lm: LanguageModel | None, encoder: SentenceEncoder | None, *,
                  verbose: bool = True) -> MixtureOfPersonas:
    """The unfitted estimator the scenario's ``mop:`` section describes: every key is the estimator
    parameter of the same name, except ``exemplar_questions``, ``exemplar_asked`` and ``exemplars_per_agent``
    (how exemplars are built and shown)."""
    return MixtureOfPersonas(lm, encoder, style=prompt_style(scenario), random_state=scenario.seed,
                             cache_path=cache_dir() / "scores.sqlite", verbose=verbose,
                             **scenario.mop.estimator_params())


def fit_model(scenario: Scenario, lm: LanguageModel, encoder: SentenceEncoder, run_dir: Path,
              population: Population | None = None, *, verbose: bool = True) -> MixtureOfPersonas:
    """Fit MoP for the scenario, or load the one in ``run_dir/mop`` fitted with the same settings."""
    saved = saved_model(scenario, lm, encoder, run_dir)
    if saved is not None:
        return saved
    model = mop_estimator(scenario, lm, encoder, verbose=verbose)
    if scenario.kind == "survey":
        population = population or load_population(scenario)
        records = survey_records(population, option_order=scenario.simulation.option_order, seed=scenario.seed)
        pool = survey_exemplars(population, model.n_exemplars, n_questions=scenario.mop.exemplar_questions,
                                seed=scenario.seed, asked=scenario.mop.exemplar_asked)
        model.fit(records, pool)
    else:
        train, _ = review_records(scenario)
        model.fit(train)
    RunDirectory(run_dir).write_fit(model.save, fit_key(scenario))
    atomic_write_json(run_dir / "personas.json", [p.to_dict() for p in model.personas_])
    return model


def _draw_respondents(scenario: Scenario, respondents: pd.DataFrame, n: int, rng: np.random.Generator,
                      which: str) -> pd.DataFrame:
    """``n`` rows of ``respondents`` drawn by survey weight (with replacement only when n exceeds those with a
    weight above 0: a respondent of weight 0 is never drawn)."""
    p = respondents["weight"].to_numpy(float)
    if p.sum() <= 0:
        raise DataError(f"every {which} respondent has weight 0 in `data.weight` column '{scenario.data.weight}'"
                        "; agents are drawn by weight, so fix the weights or drop data.weight")
    idx = rng.choice(len(respondents), size=n, replace=n > int((p > 0).sum()), p=p / p.sum())
    return respondents.iloc[idx].reset_index(drop=True)


def _profiles(population: Population, rows: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Agents' attribute columns and the text each agent's prompt states about itself."""
    profiles = rows[[f"attr_{a}" for a in population.attributes]].copy()
    return profiles, [profile_text(r, population.attributes) for _, r in rows.iterrows()]


def _agent_profiles(scenario: Scenario, population: Population | None
                    ) -> tuple[pd.DataFrame, list[str], AgentDraw | None]:
    """Agents' profiles, seeded: survey agents carry a ``weight`` (and an ``arm`` in an experiment); drawn
    from the held-out respondents by survey weight, or as the ``population:`` section says (then also
    returned: the draw with its margins)."""
    rng = np.random.default_rng([scenario.seed, 1])
    n = scenario.simulation.agents
    if scenario.kind == "survey":
        assert population is not None
        pop, draw = scenario.population, None
        if pop is not None and (pop.mode != "respondents" or pop.oversample):
            draw = draw_agents(scenario, population, n, rng)
            profiles, texts = _profiles(population, draw.profiles)
            profiles["weight"] = draw.profiles["weight"].to_numpy()
        else:
            profiles, texts = _profiles(population, _draw_respondents(scenario, population.test, n, rng, "held-out"))
            profiles["weight"] = 1.0  # drawn by survey weight already
        if scenario.experiments is not None:
            profiles["arm"] = assign_arms(scenario.experiments, n, scenario.seed)
        return profiles, texts, draw
    _, test = review_split(scenario)
    rows = test.iloc[rng.choice(len(test), size=n, replace=n > len(test))].reset_index(drop=True)
    return rows.drop(columns="text"), list(rows["context"]), None


def _print_population(draw: AgentDraw) -> None:
    """Target vs achieved (weighted) margins, the weights' design effect and effective sample size."""
    table = draw.margins.copy()
    for col in ("target", "achieved", "unweighted"):
        table[col] = table[col].round(3)
    print("population margins (target vs achieved with the agents' weights):")
    print(table.to_string(index=False))
    print(f"weights: design effect (Kish) {draw.design_effect:.2f}, effective sample size {draw.effective_n:.1f} "
          f"of {len(draw.profiles)} agents")
    if draw.heldout_note:
        print(f"note: {draw.heldout_note}")


def _baseline_temperature(scenario: Scenario) -> float:
    """The sampling temperature of the baselines without exemplars. Reviews: MoP's ``tau_init`` (its preset's,
    or the scenario's own), so every method writes at the temperature MoP starts from. Surveys: 1, the LM's own
    option probabilities: below it a bare-profile prompt gives its dispreferred options ~1e-9 (SmolLM2 on GSS at
    0.6), and the learned option bias cannot bring them back (an offset of +13 then overshoots elsewhere)."""
    if scenario.kind == "survey":
        return 1.0
    return float(resolve_preset(scenario.mop.preset, free_text=True, overrides=scenario.mop.model_dump())["tau_init"])


def learn_option_bias(scenario: Scenario, population: Population, lm: LanguageModel,
                      mop: MixtureOfPersonas | None, run_dir: Path, *, verbose: bool = True) -> OptionBias:
    """``simulation.option_bias: learned``: simulate ``calibration_agents`` training respondents (drawn by
    weight; respondents in MoP's exemplar pool left out, so nobody is shown their own answers) on the
    questions that have data, with the run's method, one round, no network; then fit offsets so that their
    answers, on the questions each of them really answered, reproduce the training respondents' weighted
    shares (:class:`~popsim.sim.calibration.OptionBias`).

    Saved as ``option_bias.json`` (full precision) and reused when the run resumes; the held-out respondents
    are never used.
    """
    path = run_dir / "option_bias.json"
    if path.is_file():
        try:
            return OptionBias.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelLoadError(f"{path} is not a readable option-bias file ({type(exc).__name__}); delete it "
                                 "to learn the offsets again") from None
    questions = [q for q in population.questions if q.column and not q.free_text and rank_position(q.id) is None]
    sim = scenario.simulation
    train = population.train
    if mop is not None and len(mop.exemplars_.groups):
        outside = ~train["id"].astype(str).isin({str(g) for g in mop.exemplars_.groups})
        train = train[outside] if outside.any() else train
    rows = _draw_respondents(scenario, train, sim.calibration_agents, np.random.default_rng([scenario.seed, 2]),
                             "training")
    profiles, texts = _profiles(population, rows)
    model = PopulationModel(
        questions=questions, lm=lm, mop=mop, profiles=profiles, profile_texts=texts, method=sim.method,
        style=mop.style_ if mop is not None else prompt_style(scenario), seed=scenario.seed,
        requests_per_call=sim.requests_per_call, chunk_agents=sim.chunk_agents, progress=verbose,
        option_order=sim.option_order, exemplars_per_agent=scenario.mop.exemplars_per_agent,
        baseline_temperature=_baseline_temperature(scenario),
    )
    model.step()
    answered = [r for r in model.responses().itertuples() if not pd.isna(rows.at[r.agent, f"q_{r.question}"])]
    scales = [tuple(model.question_by_id[r.question].option_labels) for r in answered]
    probs = [(scale, np.array([r.probs[o] for o in scale])) for scale, r in zip(scales, answered, strict=True)]
    try:
        bias = OptionBias.fit(probs, answer_shares(population.train, questions, population.train["weight"].to_numpy()))
    except ValueError as exc:
        raise PopsimError(f"cannot learn simulation.option_bias: the LM returned {exc}; check the model "
                          "(lm.name, lm.dtype) or set option_bias: none") from None
    if bias.residual() > 1e-3:
        warnings.warn(f"simulation.option_bias: the offsets reach the real shares only to within "
                      f"{bias.residual():.3f}; see option_bias.json (before / after / target)", stacklevel=2)
    atomic_write_json(path, bias.to_json())  # full precision: a resumed run reads back these exact offsets
    return bias


def run(scenario: Scenario, *, lm: LanguageModel | None = None, encoder: SentenceEncoder | None = None,
        verbose: bool = True, workers: int | None = None) -> RunResult:
    """Run one scenario end to end (fit if needed, simulate with resume, summarise).

    ``workers``: simulate on that many Ray workers, each with its own LM replica (same responses as one
    process; see :mod:`popsim.sim.distributed`); ``None`` simulates in this process.
    """
    if workers is not None:
        from popsim.sim.distributed import require_ray

        require_ray()  # before any fitting, so a missing package costs nothing
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    # Everything that can be wrong with the inputs is found before the first byte is written.
    method = scenario.simulation.method
    needs_mop = method not in {"no-persona", "silicon"}
    run_dir, population = _checked_inputs(scenario, needs_mop=needs_mop)
    profiles, texts, draw = _agent_profiles(scenario, population)
    if workers is not None and scenario.experiments is not None:
        raise PopsimError("experiments run in one process for now; drop --ray (and --workers) for a scenario "
                          "with `experiments`")
    network = (build_network(scenario.simulation.network, len(profiles), seed=scenario.seed,
                             base_dir=scenario.base_dir) if scenario.simulation.network else None)
    lm = lm or _load_lm(scenario)
    mop = None
    if needs_mop:  # no-persona and silicon never embed anything
        encoder = encoder or SentenceEncoder(scenario.encoder.name, cache_path=cache_dir() / "embeddings.sqlite")
        mop = saved_model(scenario, lm, encoder, run_dir)  # a corrupt saved model stops us here
    prepare_run_dir(scenario, run_dir)
    _manifest(scenario, run_dir, status="running")
    if draw is not None:
        atomic_write_json(run_dir / "population.json", draw.summary())
        if verbose:
            _print_population(draw)
    timings["load"] = time.perf_counter() - t0
    if needs_mop and mop is None and encoder is not None:
        t = time.perf_counter()
        mop = fit_model(scenario, lm, encoder, run_dir, population, verbose=verbose)
        timings["fit"] = time.perf_counter() - t
    option_bias = None
    if scenario.simulation.option_bias == "learned":
        assert population is not None  # the config allows it for surveys only
        t = time.perf_counter()
        option_bias = learn_option_bias(scenario, population, lm, mop, run_dir, verbose=verbose)
        timings["option_bias"] = time.perf_counter() - t
    t = time.perf_counter()
    questions = (expand_items(scenario.questions) if scenario.kind == "survey"
                 else [QuestionSpec(id="review", text="", free_text=True)])
    folder = RunDirectory(run_dir)
    done = folder.completed(folder.load_parts())  # unreadable parts are set aside with a warning, redone
    style = mop.style_ if mop is not None else prompt_style(scenario)
    model = PopulationModel(
        questions=questions, lm=lm, mop=mop, profiles=profiles, profile_texts=texts, method=method, style=style,
        seed=scenario.seed, network=network, requests_per_call=scenario.simulation.requests_per_call,
        chunk_agents=scenario.simulation.chunk_agents,
        max_new_tokens=scenario.reviews.max_new_tokens if scenario.reviews else 60,
        done=done, on_chunk=folder.part_writer(), progress=verbose, option_bias=option_bias,
        option_order=scenario.simulation.option_order, exemplars_per_agent=scenario.mop.exemplars_per_agent,
        arms=arm_plans(scenario.experiments, scenario.questions) if scenario.experiments else None,
        baseline_temperature=_baseline_temperature(scenario),
    )
    if workers is not None:
        from popsim.sim.distributed import simulate_on_ray

        model.lm_calls = simulate_on_ray(model, scenario, folder, workers=workers, verbose=verbose,
                                         mop_dir=None if mop is None else folder.mop_dir)
    else:
        for _ in range(scenario.simulation.rounds):
            model.step()
    timings["simulate"] = time.perf_counter() - t
    responses = _final_responses(folder.load_parts(), profiles)
    atomic_write_parquet(run_dir / "responses.parquet", responses)
    agents = profiles.copy()
    agents.insert(0, "agent", range(len(agents)))
    agents["profile"] = texts
    agents["persona"] = [model.by_id[i].persona for i in range(len(agents))]
    agents["exemplar"] = [model.by_id[i].exemplar for i in range(len(agents))]
    agents["temperature"] = [model.by_id[i].temperature for i in range(len(agents))]
    atomic_write_parquet(run_dir / "agents.parquet", agents)
    summary = summarise(responses, [c for c in profiles.columns if c.startswith("attr_")])
    atomic_write_parquet(run_dir / "summary.parquet", summary)
    atomic_write_text(run_dir / "summary.csv", summary.to_csv(index=False))
    if population is not None:
        held = population.test.rename(columns={c: c.removeprefix("q_") for c in population.test.columns
                                               if c.startswith("q_")})
        if draw is not None and draw.heldout_weights is not None:
            held["weight"] = draw.heldout_weights  # the real respondents stand for the same target population
        atomic_write_parquet(run_dir / "heldout.parquet", held)
    else:  # reviews: the held-out real texts, then the generated ones scored against them
        from popsim.eval.text_fidelity import write_text_fidelity  # popsim.eval loads the plotting stack

        atomic_write_parquet(run_dir / "heldout.parquet", review_split(scenario)[1].reset_index(drop=True))
        t = time.perf_counter()
        encoder = encoder or SentenceEncoder(scenario.encoder.name, cache_path=cache_dir() / "embeddings.sqlite")
        write_text_fidelity(run_dir, encoder.encode, seed=scenario.seed)
        timings["text_fidelity"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    _manifest(scenario, run_dir, status="complete", timings=timings, lm_calls=model.lm_calls,
              n_responses=len(responses), method=method,
              fit=None if mop is None else getattr(mop, "fit_info_", {}))
    return RunResult(run_dir, responses, summary, timings, model.lm_calls)


def _final_responses(parts: pd.DataFrame, profiles: pd.DataFrame) -> pd.DataFrame:
    """Deduplicate on (agent, round, question) - a chunk written twice around a crash counts once."""
    frame = parts.drop_duplicates(["agent", "round", "question"], keep="first")
    frame = frame.sort_values(["agent", "round", "question"], kind="stable").reset_index(drop=True)
    attrs = profiles.reset_index(drop=True)
    for col in attrs.columns:
        frame[col] = attrs[col].to_numpy()[frame["agent"].to_numpy()]
    frame["temperature"] = frame["temperature"].astype(float).round(6)
    return frame


def summarise(responses: pd.DataFrame, attribute_columns: list[str]) -> pd.DataFrame:
    """Answer shares per question x subgroup (each attribute value and 'all'), with n, last round only; shares
    are weighted by the agents' ``weight`` column when there is one."""
    if responses.empty:
        return pd.DataFrame(columns=["question", "subgroup", "answer", "share", "n"])
    last = responses[responses["round"] == responses["round"].max()]
    frames = []
    groupings = [("all", None)] + [(c.removeprefix("attr_"), c) for c in attribute_columns]
    for name, col in groupings:
        keys = ["question"] + ([col] if col else [])
        weight = last["weight"] if "weight" in last.columns else pd.Series(1.0, index=last.index)
        grouped = last.assign(_w=weight).groupby(keys + ["answer"], dropna=True)["_w"]
        counts = grouped.size().rename("count").reset_index()
        counts["_w"] = grouped.sum().to_numpy()
        counts["share"] = (counts["_w"] / counts.groupby(keys)["_w"].transform("sum")).round(4)
        counts["n"] = counts.groupby(keys)["count"].transform("sum")
        counts["subgroup"] = "all" if col is None else name + "=" + counts[col].astype(str)
        frames.append(counts[["question", "subgroup", "answer", "share", "n"]])
    return pd.concat(frames, ignore_index=True)
