"""``PersonaAgent``: one simulated person holding a profile, a persona, an exemplar and a temperature.

Agents never call the LM: each round they state what they need (a :class:`Request` per unanswered
question) and the model answers all agents' requests in batches through the one shared LM.
"""

from __future__ import annotations

from dataclasses import dataclass

import mesa
import numpy as np

from popsim.lm.base import Prompt

__all__ = ["PersonaAgent", "Request"]


@dataclass(frozen=True)
class Request:
    """A question an agent needs answered: its prompt and options (``None`` for free text)."""

    agent: int
    question: str
    prompt: Prompt
    options: tuple[str, ...] | None
    temperature: float


class PersonaAgent(mesa.Agent):
    """A member of the simulated population.

    Attributes:
        person_id: stable id (0..n-1) used for seeds, outputs and the network.
        profile: attribute name -> value (what the agent's prompt states about itself).
        persona, exemplar: indices into the MoP model's personas / exemplar pool (-1 = none).
        temperature: the persona's temperature tau_k.
        answers: (round, question) -> answer text.
    """

    def __init__(self, model: mesa.Model, person_id: int, profile: dict, profile_text: str,
                 persona: int, exemplar: int, temperature: float) -> None:
        super().__init__(model)
        self.person_id = person_id
        self.profile = profile
        self.profile_text = profile_text
        self.persona = persona
        self.exemplar = exemplar
        self.temperature = float(temperature)
        self.answers: dict[tuple[int, str], str] = {}
        self.probs: dict[tuple[int, str], dict[str, float]] = {}

    def requests(self, round_: int) -> list[Request]:
        """What this agent still has to answer in ``round_``."""
        model = self.model
        out = []
        for q in model.questions:
            if (round_, q.id) in self.answers or model.asked(self, q, round_) is not True:
                continue  # answered, not asked (ask_if not met), or waiting for an answer its ask_if tests
            neighbours = model.neighbour_summary(self, q.id, round_) if round_ > 1 else ""
            prompt = model.prompt_for(self, q, neighbours)
            options = None if q.free_text else model.options_for(self, q, round_)
            out.append(Request(self.person_id, q.id, prompt, options, self.temperature))
        return out

    def answer(self, round_: int, question: str, probs: np.ndarray | None, text: str | None,
               options: tuple[str, ...] | None = None) -> str:
        """Record the answer: sample an option from ``probs`` (over ``options``, default the question's) with this
        agent's own seeded stream."""
        if probs is not None:
            labels = options or tuple(self.model.question_by_id[question].option_labels)
            rng = self.model.answer_rng(self.person_id, round_, question)
            choice = int(rng.choice(len(probs), p=probs))
            text = labels[choice]
            self.probs[(round_, question)] = dict(zip(labels, probs.tolist(), strict=True))
        self.answers[(round_, question)] = text or ""
        return self.answers[(round_, question)]
