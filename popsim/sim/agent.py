"""``PersonaAgent``: one simulated person holding a profile, a persona, an exemplar and a temperature.

Agents never call the LM: each round they state what they need (a :class:`Request` per unanswered
question) and the model answers all agents' requests in batches through the one shared LM.
"""

from __future__ import annotations

from dataclasses import dataclass

import mesa
import numpy as np

from popsim.lm.base import Prompt
from popsim.option_order import order_text

__all__ = ["PersonaAgent", "Request"]


@dataclass(frozen=True)
class Request:
    """A question an agent needs answered: its prompt and options (``None`` for free text).

    ``alternates``: the same question with the options listed in other orders (``option_order: averaged``);
    the answer's option probabilities are the mean over ``prompt`` and these. ``order``: the orders shown,
    as recorded in ``responses.parquet`` (``None``: options not listed).
    """

    agent: int
    question: str
    prompt: Prompt
    options: tuple[str, ...] | None
    temperature: float
    alternates: tuple[Prompt, ...] = ()
    order: str | None = None

    @property
    def prompts(self) -> tuple[Prompt, ...]:
        return (self.prompt, *self.alternates)


class PersonaAgent(mesa.Agent):
    """A member of the simulated population.

    Attributes:
        person_id: stable id (0..n-1) used for seeds, outputs and the network.
        profile: attribute name -> value (what the agent's prompt states about itself).
        persona, exemplar: indices into the MoP model's personas / exemplar pool (-1 = none).
        more_exemplars: further exemplars shown after the first (``mop.exemplars_per_agent`` > 1).
        temperature: the persona's temperature tau_k.
        answers: (round, question) -> answer text.
    """

    def __init__(self, model: mesa.Model, person_id: int, profile: dict, profile_text: str,
                 persona: int, exemplar: int, temperature: float, more_exemplars: tuple[int, ...] = ()) -> None:
        super().__init__(model)
        self.person_id = person_id
        self.profile = profile
        self.profile_text = profile_text
        self.persona = persona
        self.exemplar = exemplar
        self.more_exemplars = tuple(more_exemplars)
        self.temperature = float(temperature)
        self.answers: dict[tuple[int, str], str] = {}
        self.probs: dict[tuple[int, str], dict[str, float]] = {}
        self.orders: dict[tuple[int, str], str | None] = {}  # option orders shown (responses' option_order)

    def requests(self, round_: int) -> list[Request]:
        """What this agent still has to answer in ``round_``."""
        model = self.model
        out = []
        for q in model.questions:
            if (round_, q.id) in self.answers or model.asked(self, q, round_) is not True:
                continue  # answered, not asked (ask_if not met), or waiting for an answer its ask_if tests
            q = model.question_for(self, q)
            neighbours = model.neighbour_summary(self, q.id, round_) if round_ > 1 else ""
            if q.free_text:
                prompt = model.prompt_for(self, q, neighbours)
                out.append(Request(self.person_id, q.id, prompt, None, self.temperature))
                continue
            options = model.options_for(self, q, round_)
            orders = model.option_orders(self, q, len(options))
            prompts = [model.prompt_for(self, q, neighbours, order, options) for order in orders]
            out.append(Request(self.person_id, q.id, prompts[0], options, self.temperature,
                               alternates=tuple(prompts[1:]), order=order_text(orders)))
        return out

    def answer(self, round_: int, question: str, probs: np.ndarray | None, text: str | None,
               options: tuple[str, ...] | None = None) -> str:
        """Record the answer: sample an option from ``probs`` (over ``options``, default the question's) with this
        agent's own seeded stream."""
        if probs is not None:
            labels = options or tuple(self.model.question_for(self, self.model.question_by_id[question]).option_labels)
            rng = self.model.answer_rng(self.person_id, round_, question)
            choice = int(rng.choice(len(probs), p=probs))
            text = labels[choice]
            self.probs[(round_, question)] = dict(zip(labels, probs.tolist(), strict=True))
        self.answers[(round_, question)] = text or ""
        return self.answers[(round_, question)]
