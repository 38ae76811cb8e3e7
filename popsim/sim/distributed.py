"""Ray sharding: one population answered by several workers, each with its own LM replica, same answers.

``popsim run SCENARIO --ray [--workers N]`` (or ``runner.run(..., workers=N)``) hands the simulation
step to :func:`simulate_on_ray`. Why its ``responses.parquet`` equals a single-process run's:

* the driver fits (or loads) MoP once and builds the full :class:`PopulationModel`, so every agent's
  persona, exemplar and temperature are drawn exactly as in one process; workers receive those draws and
  load the fitted model from ``run_dir/mop`` only for the persona texts and exemplars their prompts show;
* a shard is a set of whole chunks (``simulation.chunk_agents``), so each LM call a worker makes holds
  exactly the prompts one process would batch together (same dedupe, same batch, same padding);
* each answer is sampled from its own stream ``SeedSequence([seed, agent, round, crc32(question)])``.

Rounds are a barrier: after each round the driver gives every worker all answers of that round, so a
network scenario (neighbours' previous answers in the prompt) works across shards. Workers flush through
the same part writer as one process (:meth:`popsim.rundir.RunDirectory.part_writer` with their shard
number: ``parts/part-w{shard}-{n}.parquet``, atomic, never reusing a name), and the runner's resume and
merge read them like its own parts, so a stopped ``--ray`` run resumes with or without ``--ray``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx
import pandas as pd
from tqdm.auto import tqdm

from popsim.config import LMConfig, QuestionSpec, Scenario
from popsim.exceptions import PopsimError
from popsim.mop.prompts import PromptStyle
from popsim.rundir import RunDirectory
from popsim.sim.calibration import OptionBias
from popsim.sim.model import PopulationModel

__all__ = ["require_ray", "plan_shards", "worker_env", "default_workers", "simulate_on_ray"]

# environment a worker needs to load the same LM offline from the same cache (and reach an endpoint)
_ENV_PREFIXES = ("POPSIM_", "HF_", "OPENAI_")
_ENV_NAMES = ("TRANSFORMERS_OFFLINE", "XDG_CACHE_HOME", "TOKENIZERS_PARALLELISM")


def require_ray() -> Any:
    """Import ray, or raise one line saying how to install it (checked before any fitting starts)."""
    try:
        import ray
    except ImportError:
        raise PopsimError("--ray needs the ray package; install it with `pip install 'popsim[ray]'` "
                          "(or `pip install 'ray>=2.9'`)") from None
    return ray


def plan_shards(n_agents: int, chunk_agents: int, workers: int) -> list[list[int]]:
    """Agent ids per shard: whole chunks dealt round-robin, so each shard's LM batches match one process's.

    A worker chunks its own sorted agents by ``chunk_agents``; since every chunk but the population's last
    is full, that re-creates the single-process chunks exactly. Round-robin keeps shards balanced on a
    fresh run and on a resumed one alike. There are never more shards than chunks.
    """
    if n_agents <= 0 or chunk_agents <= 0 or workers <= 0:
        raise ValueError(f"n_agents, chunk_agents and workers must be positive; got {n_agents}, "
                         f"{chunk_agents}, {workers}")
    chunks = [list(range(i, min(i + chunk_agents, n_agents))) for i in range(0, n_agents, chunk_agents)]
    shards = min(workers, len(chunks))
    return [[a for c in chunks[s::shards] for a in c] for s in range(shards)]


def worker_env() -> dict[str, str]:
    """The driver's variables a worker must see (offline hub, cache folder, endpoint settings)."""
    return {k: v for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES) or k in _ENV_NAMES}


def default_workers(lm: LMConfig) -> int:
    """One worker per GPU when the LM may use them, else one per CPU core."""
    import torch

    if lm.device != "cpu" and torch.cuda.is_available():
        return torch.cuda.device_count()
    return os.cpu_count() or 1


@dataclass(frozen=True)
class _Population:
    """Everything a worker needs to rebuild the driver's population (put once in Ray's object store)."""

    questions: list[QuestionSpec]
    lm: LMConfig
    mop_dir: str | None
    profiles: pd.DataFrame
    profile_texts: list[str]
    draws: dict[str, list]
    method: str
    style: PromptStyle
    seed: int
    network: nx.Graph | None
    requests_per_call: int
    chunk_agents: int
    max_new_tokens: int
    done: dict
    run_dir: str
    option_bias: OptionBias | None = None
    option_order: str = "unlisted"


class _ShardWorker:
    """A Ray actor: its own LM replica and the whole population, answering only its shard's agents."""

    def __init__(self, population: _Population, shard: int, agent_ids: list[int]) -> None:
        from popsim.lm import load_lm
        from popsim.mop import MixtureOfPersonas

        cfg = population.lm
        if getattr(cfg, "threads", None):
            import torch

            torch.set_num_threads(cfg.threads)
        lm = load_lm(cfg.name, device=cfg.device, dtype=cfg.dtype, batch_tokens=cfg.batch_tokens,
                     compile=cfg.compile)
        mop = MixtureOfPersonas.load(population.mop_dir) if population.mop_dir else None
        self.write_part = RunDirectory(population.run_dir).part_writer(shard)
        self.new: dict = {}
        self.model = PopulationModel(
            questions=population.questions, lm=lm, mop=mop, profiles=population.profiles,
            profile_texts=population.profile_texts, method=population.method, style=population.style,
            seed=population.seed, network=population.network, requests_per_call=population.requests_per_call,
            chunk_agents=population.chunk_agents, max_new_tokens=population.max_new_tokens,
            done=population.done, on_chunk=self._flush, progress=False, draws=population.draws,
            active=agent_ids, option_bias=population.option_bias, option_order=population.option_order,
        )

    def _flush(self, rows: list[dict]) -> None:
        self.write_part(rows)
        if self.model.network is not None:  # the driver passes this round's answers to the other shards
            self.new.update({(r["agent"], r["round"], r["question"]): (r["answer"], None) for r in rows})

    def step(self, others: dict) -> tuple[dict, int]:
        """Take the other shards' answers of the last round, answer this one; returns (new answers, LM calls)."""
        self.model.record(others)
        self.new, calls = {}, self.model.lm_calls
        self.model.step()
        return self.new, self.model.lm_calls - calls


def _start_ray(ray: Any, workers: int) -> bool:
    """Use Ray if this process already joined it, else ``RAY_ADDRESS`` (e.g. ``auto``), else a private local
    instance with one CPU per worker (never a stray cluster by accident). True when ray.init ran here."""
    if ray.is_initialized():
        return False
    options = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    if os.environ.get("RAY_ADDRESS"):
        ray.init(**options)
    else:
        ray.init(address="local", num_cpus=workers, **options)
    return True


def _unwrap(exc: Exception) -> PopsimError:
    """A worker's PopsimError as itself (one line at the CLI); anything else as a one-line PopsimError."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, PopsimError):
        return cause
    lines = [ln for ln in str(exc).splitlines() if ln.strip()]
    return PopsimError(f"a Ray worker failed: {lines[-1] if lines else type(exc).__name__}")


def simulate_on_ray(model: PopulationModel, scenario: Scenario, run_dir: RunDirectory, *, workers: int,
                    mop_dir: Path | None, verbose: bool = True) -> int:
    """Answer every round of ``model``'s population on ``workers`` Ray actors; returns their LM calls.

    ``model`` is the driver's un-stepped model (its draws and resumed answers are the source of truth);
    the answers go to ``run_dir``'s parts, not into ``model``.
    """
    ray = require_ray()
    agents = sorted(model.agents, key=lambda a: a.person_id)
    rounds = range(1, scenario.simulation.rounds + 1)
    if not any(a.requests(r) for r in rounds for a in agents):  # every question answered or skipped (ask_if)
        return 0  # a rerun of a finished run: no need to start Ray and load LM replicas
    shards = plan_shards(len(agents), model.chunk_agents, workers)
    started = _start_ray(ray, len(shards))
    actors: list = []
    try:
        cpus = ray.cluster_resources().get("CPU", 0)
        if cpus < len(shards):
            raise PopsimError(f"the Ray cluster has {cpus:g} CPUs, fewer than the {len(shards)} workers asked "
                              "for; pass a smaller --workers")
        gpus = ray.cluster_resources().get("GPU", 0) if scenario.lm.device != "cpu" else 0
        population = _Population(
            questions=model.questions, lm=scenario.lm, mop_dir=None if mop_dir is None else str(mop_dir.resolve()),
            profiles=pd.DataFrame([a.profile for a in agents]), profile_texts=[a.profile_text for a in agents],
            draws={"persona": [a.persona for a in agents], "exemplar": [a.exemplar for a in agents],
                   "temperature": [a.temperature for a in agents],
                   "more_exemplars": [a.more_exemplars for a in agents]},
            method=model.method, style=model.style, seed=model.seed, network=model.network,
            requests_per_call=model.requests_per_call, chunk_agents=model.chunk_agents,
            max_new_tokens=model.max_new_tokens, done=model.done, run_dir=str(run_dir.path.resolve()),
            option_bias=model.option_bias, option_order=model.option_order,
        )
        ref = ray.put(population)
        actor = ray.remote(_ShardWorker).options(
            num_cpus=1, num_gpus=min(1.0, gpus / len(shards)), runtime_env={"env_vars": worker_env()})
        actors += [actor.remote(ref, s, ids) for s, ids in enumerate(shards)]
        calls, others = 0, {}
        for round_ in rounds:
            pending = [a.step.remote(others) for a in actors]
            bar = tqdm(total=len(agents), desc=f"round {round_} ({len(shards)} Ray workers)",
                       disable=not verbose, unit="agent")
            size = {p: len(ids) for p, ids in zip(pending, shards, strict=True)}
            others = {}
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                answers, n_calls = ray.get(ready[0])
                others.update(answers)
                calls += n_calls
                bar.update(size[ready[0]])
            bar.close()
        return calls
    except ray.exceptions.RayError as exc:
        raise _unwrap(exc) from None
    finally:
        for a in actors:  # free their LM replicas now, also on a cluster this run did not start
            ray.kill(a)
        if started:
            ray.shutdown()
