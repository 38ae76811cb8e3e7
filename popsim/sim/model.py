"""``PopulationModel``: a Mesa 3 model of agents answering through ONE shared, batched, frozen LM.

Each step (a round) the model gathers every agent's pending requests, deduplicates identical prompts,
sends them to the LM in batches (``requests_per_call`` prompts per call: one population step of N agents
makes about ceil(requests / requests_per_call) calls, not N), and scatters the results back. Agents are
processed in chunks so completed answers can be flushed to disk as they finish (``on_chunk``), which
keeps memory flat and makes a run resumable.

Randomness: the model owns ``rng`` (seeded); persona/exemplar draws use it; each answer is sampled from
its own stream ``SeedSequence([seed, agent, round, question])``, so an answer does not depend on which
other answers were computed in the same call or before an interruption.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence

import mesa
import networkx as nx
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from popsim.config import QuestionSpec
from popsim.data import question_line, survey_context
from popsim.lm.base import LanguageModel, Prompt
from popsim.mop.model import MixtureOfPersonas
from popsim.mop.prompts import PromptStyle, build_prompt
from popsim.option_order import Order, orders_for
from popsim.questions import SkipLogic, item_id, item_options, item_parent, rank_position
from popsim.sim.agent import PersonaAgent, Request
from popsim.sim.arms import ArmPlan
from popsim.sim.calibration import OptionBias

__all__ = ["PopulationModel", "assign_mixture"]

METHODS = ("mop", "uniform", "persona-only", "no-persona", "silicon")


def assign_mixture(method: str, mop: MixtureOfPersonas | None, gate_texts: Sequence[str],
                   rng: np.random.Generator, tau_default: float | None = None) -> dict[str, np.ndarray]:
    """Persona, exemplar (-1 = none) and temperature per agent for MoP or a baseline.

    mop: drawn from the learned gates; uniform: persona and exemplar uniform, tau = tau_init;
    persona-only: uniform persona, no exemplar; no-persona and silicon: neither (silicon keeps the agent's real
    profile in its prompt, no-persona drops it too). The baselines sample at ``tau_default``, by default MoP's
    ``tau_init`` (1.0 without a fitted MoP), so no method gets a temperature the others do not.
    """
    n = len(gate_texts)
    none = np.full(n, -1)
    if tau_default is None:
        tau_default = float(mop.settings_["tau_init"]) if mop is not None else 1.0
    if method == "mop":
        assert mop is not None
        return mop.sample(gate_texts, rng)
    if method == "uniform":
        assert mop is not None
        return {"persona": rng.integers(len(mop.personas_), size=n),
                "exemplar": rng.integers(len(mop.exemplars_), size=n),
                "temperature": np.full(n, mop.settings_["tau_init"])}
    if method == "persona-only":
        assert mop is not None
        return {"persona": rng.integers(len(mop.personas_), size=n), "exemplar": none,
                "temperature": np.full(n, tau_default)}
    if method in {"no-persona", "silicon"}:
        return {"persona": none, "exemplar": none, "temperature": np.full(n, tau_default)}
    raise ValueError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")


def more_exemplars(method: str, mop: MixtureOfPersonas | None, gate_texts: Sequence[str],
                   draws: Mapping[str, Sequence], extra: int, seed: int) -> list[tuple[int, ...]]:
    """``extra`` more exemplars per agent, distinct from its first: from its own Omega_k(x) (mop) or
    uniformly (uniform); none for methods without exemplars.

    A stream of their own (seeded from ``seed``), so one exemplar per agent draws exactly as before.
    """
    n = len(gate_texts)
    first = np.asarray(draws["exemplar"], dtype=int)
    if extra <= 0 or mop is None or (first < 0).all():
        return [()] * n
    rng = np.random.default_rng([seed, 5])
    size = len(mop.exemplars_)
    if method == "mop":
        omega = mop.exemplar_weights(list(gate_texts), np.asarray(draws["persona"], dtype=int))
    else:
        omega = np.full((n, size), 1.0 / size)
    out = []
    for i in range(n):
        w = np.array(omega[i], dtype=float)
        w[first[i]] = 0.0
        take = min(extra, int((w > 0).sum()))
        out.append(tuple(int(j) for j in rng.choice(size, size=take, replace=False, p=w / w.sum())) if take else ())
    return out


class PopulationModel(mesa.Model):
    """Agents with persona + exemplar answering questions through one shared LM.

    Args:
        questions: what every agent answers each round (reviews: one free-text "question").
        lm: the shared frozen LM.
        mop: a fitted MixtureOfPersonas (``None`` only for no-persona/silicon).
        profiles: one row per agent: ``attr_<name>`` columns (surveys) or a ``context`` column (reviews).
        profile_texts: what each agent's prompt states about itself (and the gates read).
        method: ``mop`` or a baseline (see :func:`assign_mixture`).
        style: prompt wording; ``kind="chat"`` means free-text reviews.
        network: optional graph over agent ids; from round 2 prompts include neighbours' answers.
        done: (agent, round, question) -> (answer, probs) already on disk (resume).
        on_chunk: called with the list of completed answer rows after each chunk of agents.
        draws: persona, exemplar and temperature per agent drawn elsewhere (a sharded run draws once, on
            its driver, so every shard agrees); ``None`` draws them here from ``rng``.
        active: ids of the agents this model answers for (one Ray shard); the others only hold answers,
            e.g. neighbours in another shard. ``None``: all agents.
        option_bias: learned offsets added to the LM's option log-probabilities before an answer is drawn
            (:class:`~popsim.sim.calibration.OptionBias`); ``None``: the LM's own probabilities. With
            ``method="mop"`` and a MoP fitted with ``learn_option_offsets``, its offsets are added first
            (:attr:`mop_option_bias`: the gates were trained against them), then these.
        option_order: how options are shown (:mod:`popsim.option_order`): unlisted, listed, shuffled per
            (agent, question), or averaged over the forward and reversed listing.
        exemplars_per_agent: exemplars each agent holds and is shown (``mop.exemplars_per_agent``); the
            first is the paper's draw, the others more draws from the same Omega_k(x) without replacement.
        arms: a survey experiment's arms by name (:mod:`popsim.sim.arms`); an agent whose profile has an
            ``arm`` is asked that arm's question variants, with its preamble/information before each question.
        baseline_temperature: the sampling temperature of the baselines without learned ones (persona-only,
            no-persona, silicon); ``None``: the fitted MoP's ``tau_init``, or 1.0 without one.
    """

    def __init__(
        self,
        *,
        questions: Sequence[QuestionSpec],
        lm: LanguageModel,
        mop: MixtureOfPersonas | None,
        profiles: pd.DataFrame,
        profile_texts: Sequence[str],
        method: str = "mop",
        style: PromptStyle | None = None,
        seed: int = 0,
        network: nx.Graph | None = None,
        requests_per_call: int = 256,
        chunk_agents: int = 64,
        max_new_tokens: int = 60,
        done: dict | None = None,
        on_chunk: Callable[[list[dict]], None] | None = None,
        progress: bool = True,
        draws: Mapping[str, Sequence] | None = None,
        active: Collection[int] | None = None,
        option_bias: OptionBias | None = None,
        option_order: str = "unlisted",
        exemplars_per_agent: int = 1,
        arms: Mapping[str, ArmPlan] | None = None,
        baseline_temperature: float | None = None,
    ) -> None:
        super().__init__(rng=seed)
        self.seed = seed
        self.questions = list(questions)
        self.question_by_id = {q.id: q for q in self.questions}
        self.skip_logic = SkipLogic(self.questions)
        self.lm = lm
        self.mop = mop
        self.method = method
        self.style = style or (mop.style_ if mop is not None else PromptStyle.survey())
        self.network = network
        self.requests_per_call = requests_per_call
        self.chunk_agents = chunk_agents
        self.max_new_tokens = max_new_tokens
        self.done = done or {}
        self.on_chunk = on_chunk
        self.progress = progress
        self.active = None if active is None else frozenset(int(i) for i in active)
        self.option_bias = option_bias
        self.option_order = option_order
        self.arms = dict(arms or {})
        offsets = mop.option_offsets_ if method == "mop" and mop is not None else {}
        self.mop_option_bias = OptionBias(offsets) if offsets else None
        self.round = 0
        self.lm_calls = 0
        gate_texts = [t or "a member of the population" for t in profile_texts]
        if draws is None:
            draws = assign_mixture(method, mop, gate_texts, self.rng, tau_default=baseline_temperature)
        if "more_exemplars" not in draws:
            draws = {**draws, "more_exemplars": more_exemplars(method, mop, gate_texts, draws,
                                                               exemplars_per_agent - 1, seed)}
        shown = ["" if method == "no-persona" else t for t in profile_texts]
        records = profiles.to_dict("records")
        PersonaAgent.create_agents(
            self, len(records), person_id=list(range(len(records))), profile=records, profile_text=shown,
            persona=[int(k) for k in draws["persona"]], exemplar=[int(j) for j in draws["exemplar"]],
            temperature=[float(t) for t in draws["temperature"]],
            more_exemplars=[tuple(int(j) for j in js) for js in draws["more_exemplars"]],
        )
        self.by_id = {a.person_id: a for a in self.agents}
        self.record(self.done)
        reporters = {f"share:{q.id}:{o}": _share_reporter(q.id, o) for q in self.questions for o in q.option_labels}
        self.datacollector = mesa.DataCollector(model_reporters=reporters)

    def record(self, answers: Mapping[tuple[int, int, str], tuple[str, dict | None]]) -> None:
        """Store answers computed elsewhere: on disk (resume) or in another shard (its neighbours' last round)."""
        for (agent, round_, question), (text, probs) in answers.items():
            if agent in self.by_id:
                self.by_id[agent].answers[(round_, question)] = text
                if probs is not None:
                    self.by_id[agent].probs[(round_, question)] = probs

    # ------------------------------------------------------------------ prompts
    def question_for(self, agent: PersonaAgent, question: QuestionSpec) -> QuestionSpec:
        """The question as ``agent`` is asked it: its experiment arm's wording and option order, if any."""
        plan = self.arms.get(agent.profile.get("arm")) if self.arms else None
        return question if plan is None else plan.question(question)

    def option_orders(self, agent: PersonaAgent, question: QuestionSpec, n_options: int | None = None
                      ) -> list[Order | None]:
        """The option orders ``agent`` is shown for ``question`` (its own seeded draw when shuffled) over its
        ``n_options`` options as asked (default all the question's)."""
        n = len(question.option_labels) if n_options is None else n_options
        return orders_for(self.option_order, n, seed=self.seed, who=agent.person_id, question=question.id)

    def prompt_for(self, agent: PersonaAgent, question: QuestionSpec, neighbours: str = "",
                   order: Order | None = None, labels: Sequence[str] | None = None) -> Prompt:
        """``labels``: the options as asked, listed in ``order`` (a ranking position: those left)."""
        plan = self.arms.get(agent.profile.get("arm")) if self.arms else None
        if plan is not None and plan.context:
            neighbours = plan.context + ("\n" + neighbours if neighbours else "")
        persona = None if agent.persona < 0 or self.mop is None else self.mop.personas_[agent.persona].text
        exemplars = []
        if agent.exemplar >= 0 and self.mop is not None:
            pool = self.mop.exemplars_
            exemplars = [(pool.inputs[j], pool.output_for(j, question.id))
                         for j in (agent.exemplar, *agent.more_exemplars)]
        if self.style.kind == "chat":
            context = agent.profile_text + (("\n" + neighbours) if neighbours else "")
        elif agent.profile_text:
            context = survey_context(agent.profile_text, question, neighbours, order, labels)
        else:
            context = ((neighbours + "\n") if neighbours else "") + question_line(question, order, labels)
        return build_prompt(persona, exemplars or None, context, self.style)

    def neighbour_summary(self, agent: PersonaAgent, question: str, round_: int) -> str:
        if self.network is None or agent.person_id not in self.network:
            return ""
        answers = [self.by_id[n].answers.get((round_ - 1, question)) for n in self.network.neighbors(agent.person_id)
                   if n in self.by_id]
        answers = [a for a in answers if a]
        if not answers:
            return ""
        counts = Counter(answers).most_common()
        return "People you know answered: " + ", ".join(f"{a} ({c})" for a, c in counts) + "."

    def asked(self, agent: PersonaAgent, question: QuestionSpec, round_: int) -> bool | None:
        """Whether ``agent`` is asked ``question`` this round under its ``ask_if`` (None: an item the condition
        tests is still unanswered). Items before ``question`` that the agent was not asked count as settled. A
        ranking's position n waits for position n - 1 (its options are those still unranked)."""
        n = rank_position(question.id)
        if n is not None and n > 1:
            previous = self.question_by_id[item_id(item_parent(question.id)[0], f"#{n - 1}")]
            if (round_, previous.id) not in agent.answers:
                return False if self.asked(agent, previous, round_) is False else None
            return True
        if question.ask_if is None:
            return True
        answers: dict[str, str | None] = {}
        for item in self.questions:
            if item.id == question.id:
                break
            if (round_, item.id) in agent.answers:
                answers[item.id] = agent.answers[(round_, item.id)]
            elif self.skip_logic.asked(item, answers, agent.profile) is False:
                answers[item.id] = None
        return self.skip_logic.asked(question, answers, agent.profile)

    def options_for(self, agent: PersonaAgent, question: QuestionSpec, round_: int) -> tuple[str, ...]:
        """The options ``agent`` is asked with (a ranking position: those it has not ranked yet)."""
        if rank_position(question.id) is None:
            return tuple(question.option_labels)
        return item_options(question, {q: a for (r, q), a in agent.answers.items() if r == round_})

    def answer_rng(self, agent: int, round_: int, question: str) -> np.random.Generator:
        q = zlib.crc32(question.encode())
        return np.random.default_rng(np.random.SeedSequence([self.seed, agent, round_, q]))

    # ------------------------------------------------------------------ stepping
    def step(self) -> None:
        """One round: every agent answers every question it has not answered yet and is asked (``ask_if``:
        questions whose condition tests earlier answers wait for them, in a later batch of the same chunk)."""
        self.round += 1
        agents = sorted(self.agents, key=lambda a: a.person_id)
        if self.active is not None:
            agents = [a for a in agents if a.person_id in self.active]
        chunks = [agents[i : i + self.chunk_agents] for i in range(0, len(agents), self.chunk_agents)]
        bar = tqdm(total=len(agents), desc=f"round {self.round}", disable=not self.progress, unit="agent")
        for chunk in chunks:
            rows = []
            while requests := [r for a in chunk for r in a.requests(self.round)]:  # ask_if: wave after wave
                rows += self.answer(requests)
            if rows and self.on_chunk is not None:
                self.on_chunk(rows)
            bar.update(len(chunk))
        bar.close()
        self.datacollector.collect(self)

    def answer(self, requests: list[Request]) -> list[dict]:
        """Gather -> dedupe -> batch through the LM -> scatter; returns completed answer rows."""
        rows = []
        choice = [r for r in requests if r.options is not None]
        free = [r for r in requests if r.options is None]
        unique: dict[tuple, int] = {}
        keys: list[list[int]] = []  # per request: its prompts' indices into the unique (prompt, options, tau)
        uniq_requests: list[tuple[Prompt, Request]] = []
        for r in choice:
            keys.append([])
            for prompt in r.prompts:
                key = (self.lm.render(prompt), r.options, round(r.temperature, 6))
                if key not in unique:
                    unique[key] = len(unique)
                    uniq_requests.append((prompt, r))
                keys[-1].append(unique[key])
        probs: list[np.ndarray] = []
        for start in range(0, len(uniq_requests), self.requests_per_call):
            batch = uniq_requests[start : start + self.requests_per_call]
            self.lm_calls += 1
            logps = self.lm.option_logprobs([p for p, _ in batch], [list(r.options) for _, r in batch],
                                            temperature=[r.temperature for _, r in batch])
            for (_, r), lp in zip(batch, logps, strict=True):
                for bias in (self.mop_option_bias, self.option_bias):
                    lp = lp if bias is None else bias.shift(r.options, lp)
                probs.append(_stable_probs(lp))
        for r, ks in zip(choice, keys, strict=True):
            agent = self.by_id[r.agent]
            p = probs[ks[0]] if len(ks) == 1 else _mean_probs([probs[k] for k in ks])
            agent.orders[(self.round, r.question)] = r.order
            text = agent.answer(self.round, r.question, p, None, r.options)
            rows.append(self._row(agent, r.question, text))
        for start in range(0, len(free), self.requests_per_call):
            batch = free[start : start + self.requests_per_call]
            self.lm_calls += 1
            seeds = [int(self.answer_rng(r.agent, self.round, r.question).integers(2**31)) for r in batch]
            texts = self.lm.generate([r.prompt for r in batch], max_new_tokens=self.max_new_tokens,
                                     temperature=[r.temperature for r in batch], seed=seeds)
            for r, text in zip(batch, texts, strict=True):
                agent = self.by_id[r.agent]
                agent.answer(self.round, r.question, None, text.strip())
                rows.append(self._row(agent, r.question, text.strip()))
        return rows

    def _row(self, agent: PersonaAgent, question: str, text: str) -> dict:
        probs = agent.probs.get((self.round, question))
        return {"agent": agent.person_id, "round": self.round, "question": question, "answer": text,
                "probs": probs, "persona": agent.persona, "exemplar": agent.exemplar,
                "temperature": agent.temperature, "option_order": agent.orders.get((self.round, question)),
                "more_exemplars": _ids(agent.more_exemplars)}

    def responses(self) -> pd.DataFrame:
        """All answers so far, one row per (agent, round, question)."""
        rows = []
        for agent in sorted(self.agents, key=lambda a: a.person_id):
            for (round_, question), text in sorted(agent.answers.items()):
                rows.append({"agent": agent.person_id, "round": round_, "question": question, "answer": text,
                             "probs": agent.probs.get((round_, question)), "persona": agent.persona,
                             "exemplar": agent.exemplar, "temperature": agent.temperature,
                             "option_order": agent.orders.get((round_, question)),
                             "more_exemplars": _ids(agent.more_exemplars)})
        return pd.DataFrame(rows)


def _ids(exemplars: Sequence[int]) -> str | None:
    """Further exemplars as recorded in ``responses.parquet``: "12 40" (``None`` when there are none)."""
    return " ".join(str(j) for j in exemplars) or None


def _mean_probs(probs: Sequence[np.ndarray]) -> np.ndarray:
    """The mean of option distributions, rounded as :func:`_stable_probs` rounds one."""
    p = np.round(np.mean(probs, axis=0), 6)
    return p / p.sum()


def _stable_probs(logprobs: np.ndarray) -> np.ndarray:
    """Probabilities rounded to 6 decimals, so results do not depend on batch make-up at float noise level."""
    p = np.round(np.exp(logprobs - np.logaddexp.reduce(logprobs)), 6)
    return p / p.sum()


def _share_reporter(question: str, option: str) -> Callable[[PopulationModel], float]:
    def share(model: PopulationModel) -> float:
        answers = [a.answers.get((model.round, question)) for a in model.agents]
        answers = [a for a in answers if a is not None]
        return sum(a == option for a in answers) / len(answers) if answers else float("nan")

    return share
