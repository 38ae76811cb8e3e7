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
  A model without a chat template (a base model such as Gemma 3 270M) is given the same parts as a page of
  reviews to continue (``Chat.plain``): persona, then "Review of <x_j>:" + y_j, then "Review of <x>:" and a
  new line; the review ends at the first blank line (:data:`popsim.lm.base.PLAIN_TURN_END`). Instruction,
  ``persona_in_system`` and ``exemplar_turn`` address an assistant and do not apply there. Rendered as
  "User: ... Assistant:" turns instead, a base model continues the dialogue rather than the review.
* ``transcript`` (surveys): plain text, no chat template. A small LM follows a plain Q/A transcript of a
  respondent's earlier answers strongly but ignores the same answers wrapped in a chat template
  (measured, see REFERENCE.md), so the exemplar is presented as the agent's own earlier answers and the
  new question continues the transcript; the response is an option after "A:".

Data is inserted by concatenation only (no ``str.format`` on data), so braces in records are inert. The
order instruction -> persona -> exemplar -> context keeps the longest shared prefix first, which the
LM backend's prefix tree exploits.
"""

from __future__ import annotations

from collections.abc import Sequence
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
        plain_intro: ``chat`` only: the header word(s) before a context in the template-free rendering
            ("Review of" + x + ":"); empty uses the context alone as the header.
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
    plain_intro: str = "Review of"
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


Exemplar = tuple[str, str]


def build_prompt(
    persona: str | None,
    exemplar: Exemplar | Sequence[Exemplar] | None,
    context: str,
    style: PromptStyle,
) -> Prompt:
    """Prompt for (persona g_k, exemplar (x_j, y_j), context x); ``None`` leaves a part out (baselines).

    ``exemplar`` may also be several (x_j, y_j) (``mop.exemplars_per_agent``): each is rendered as one
    exemplar is, in the order given.
    """
    pairs: list[Exemplar] = ([exemplar] if exemplar and isinstance(exemplar[0], str)  # type: ignore[list-item]
                             else list(exemplar or []))
    parts = [style.instruction]
    if persona:
        parts.append(persona.strip())
    if style.kind == "chat":
        if not style.exemplar_turn:
            for x_j, y_j in pairs:
                lead = style.exemplar_intro + (" " + x_j.strip() if x_j.strip() else "")
                parts.append(lead + ": " + y_j.strip())
        task = _task(context, style)
        parts = [p for p in parts if p]
        turns: list[tuple[str, str]] = [("user", task)]
        if style.exemplar_turn:
            earlier = [t for x_j, y_j in pairs for t in (("user", _task(x_j, style)), ("assistant", y_j.strip()))]
            turns = [*earlier, *turns]
        plain = _plain_page(persona, pairs, context, style)
        if style.persona_in_system and parts:
            return Chat(messages=(("system", "\n\n".join(parts)), *turns), plain=plain)
        if parts:
            turns[0] = ("user", "\n\n".join([*parts, turns[0][1]]))
        return Chat(messages=((("system", style.system),) if style.system else ()) + tuple(turns), plain=plain)
    for _, y_j in pairs:
        parts.append(style.exemplar_intro + "\n" + y_j.strip())
    return "\n\n".join(parts) + "\n\n" + context.rstrip() + "\nA:"


def _task(context: str, style: PromptStyle) -> str:
    """The task line for a context: ``task_intro`` + context + ".", or the context as is."""
    task = context.strip()
    if not style.task_intro:
        return task
    return style.task_intro + (" " + task if task else "") + "."


def _plain_page(persona: str | None, exemplars: Sequence[Exemplar], context: str, style: PromptStyle) -> str:
    """The template-free rendering of a ``chat`` prompt: a page of reviews for a base model to continue."""
    parts = [persona.strip()] if persona and persona.strip() else []
    for x_j, y_j in exemplars:
        parts.append(_header(x_j, style) + "\n" + y_j.strip())
    return "\n\n".join([*parts, _header(context, style)]) + "\n"


def _header(context: str, style: PromptStyle) -> str:
    """"Review of <context>:" (``plain_intro`` + context), or the context alone, capitalised."""
    text = (style.plain_intro.strip() + " " + context.strip()).strip() if style.plain_intro else context.strip()
    return text[:1].upper() + text[1:] + ":"
