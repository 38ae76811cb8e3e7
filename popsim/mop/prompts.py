"""The one prompt builder: MoP training scores exactly the prompts that simulation later sends.

Paper (Bui et al. 2025, Fig. 2): "You embody the persona in the description to complete the task." +
persona + "You have written a review for <x_j>: <y_j>" + the task for x. Two renderings:

* ``chat`` (free text, the paper's setting): everything in one user turn of the model's chat template;
  the response is the assistant's answer. ``persona_in_system=True`` puts instruction, persona and
  exemplar in the system message instead (replacing a template's default identity, e.g. SmolLM2's "You are
  a helpful AI assistant named SmolLM"). Measured on SmolLM2-135M, that trade is bad for MoP: its reviews
  moved closer to real ones (IMDB dev FID 1.108 -> 1.050) because it follows the persona less, so much
  that fitted mixing weights no longer recover known personas (tests/test_recovery.py: 0.42 / 0.58 / 0.00
  for a true 0.6 / 0.3 / 0.1). Hence one user turn is the default. ``exemplar_turn=True`` renders the
  exemplar as an earlier exchange instead (user: the task for x_j; assistant: y_j): SmolLM2 imitates its
  own earlier answer far more than a quoted one (IMDB / AG News / SST-2 dev, MoP with the system placement:
  FID 0.745 / 0.919 / 0.766 -> 0.711 / 0.885 / 0.760, MAUVE 0.70 / 0.94 / 0.85 -> 0.91 / 1.00 / 0.94).
* ``transcript`` (surveys): plain text, no chat template. A small LM follows a plain Q/A transcript of a
  respondent's earlier answers strongly but ignores the same answers wrapped in a chat template
  (measured, see REFERENCE.md), so the exemplar is presented as the agent's own earlier answers and the
  new question continues the transcript; the response is an option after "A:".

Data is inserted by concatenation only (no ``str.format`` on data), so braces in records are inert. The
order instruction -> persona -> exemplar -> context keeps the longest shared prefix first, which the
LM backend's prefix tree exploits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from popsim.lm.base import Chat, Prompt

__all__ = ["PromptStyle", "build_prompt", "INSTRUCTION", "REVIEWER"]

INSTRUCTION = "You embody the persona in the description to complete the task."
REVIEWER = "You are a person writing a review in your own words."
"""The reviews' system message: without one, SmolLM2's template makes the writer "a helpful AI assistant named
SmolLM, trained by Hugging Face", and its reviews open as that assistant (docs/experiments.md, 2026-12-06)."""


@dataclass(frozen=True)
class PromptStyle:
    """How personas, exemplars and contexts are put into words.

    Args:
        kind: ``chat`` (free text) or ``transcript`` (multiple-choice surveys).
        exemplar_intro: words before an exemplar; for ``chat``, it is followed by ``x_j`` and ": " + ``y_j``
            (paper: "You have written a review for"); for ``transcript``, by the answers themselves.
        task_intro: words before the context x (paper: "Please write a review for"); empty uses x as is.
        instruction: the opening sentence.
        persona_in_system: ``chat`` only: instruction, persona and exemplar go in the system message and
            the task in the user turn (True), or all of it in one user turn (False, as Fig. 2 prints it).
        exemplar_turn: ``chat`` only: the exemplar is an earlier exchange of the conversation (the task for
            x_j as a user turn, y_j as the assistant's answer) instead of a sentence ("You have written ...")
            inside the prompt; a small chat model imitates its own earlier answer more closely.
        system: ``chat`` only, with ``persona_in_system=False``: the system message. A chat template given
            none inserts the model's own identity (SmolLM2: "You are a helpful AI assistant named SmolLM,
            trained by Hugging Face"), which the model then writes as; ``""`` leaves the template's default.
    """

    kind: Literal["chat", "transcript"] = "chat"
    exemplar_intro: str = "You have written a review for"
    task_intro: str = ""
    instruction: str = INSTRUCTION
    persona_in_system: bool = False
    exemplar_turn: bool = False
    system: str = ""

    @classmethod
    def survey(cls) -> PromptStyle:
        return cls(kind="transcript", exemplar_intro="Earlier in this survey you answered:")

    @classmethod
    def reviews(cls) -> PromptStyle:
        """Paper wording; contexts name the item, e.g. "a movie you rate 8/10" or "the movie Heat"."""
        return cls(kind="chat", exemplar_intro="You have written a review for",
                   task_intro="Please write a review for", system=REVIEWER)


def build_prompt(
    persona: str | None,
    exemplar: tuple[str, str] | None,
    context: str,
    style: PromptStyle,
) -> Prompt:
    """Prompt for (persona g_k, exemplar (x_j, y_j), context x); ``None`` leaves a part out (baselines)."""
    parts = [style.instruction]
    if persona:
        parts.append(persona.strip())
    if style.kind == "chat":
        if exemplar is not None and not style.exemplar_turn:
            x_j, y_j = exemplar
            lead = style.exemplar_intro + (" " + x_j.strip() if x_j.strip() else "")
            parts.append(lead + ": " + y_j.strip())
        task = _task(context, style)
        parts = [p for p in parts if p]
        turns: list[tuple[str, str]] = [("user", task)]
        if exemplar is not None and style.exemplar_turn:
            turns = [("user", _task(exemplar[0], style)), ("assistant", exemplar[1].strip()), *turns]
        if style.persona_in_system and parts:
            return Chat(messages=(("system", "\n\n".join(parts)), *turns))
        if parts:
            turns[0] = ("user", "\n\n".join([*parts, turns[0][1]]))
        return Chat(messages=((("system", style.system),) if style.system else ()) + tuple(turns))
    if exemplar is not None:
        parts.append(style.exemplar_intro + "\n" + exemplar[1].strip())
    return "\n\n".join(parts) + "\n\n" + context.rstrip() + "\nA:"


def _task(context: str, style: PromptStyle) -> str:
    """The task line for a context: ``task_intro`` + context + ".", or the context as is."""
    task = context.strip()
    if not style.task_intro:
        return task
    return style.task_intro + (" " + task if task else "") + "."
