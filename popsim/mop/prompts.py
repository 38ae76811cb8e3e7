"""The one prompt builder: MoP training scores exactly the prompts that simulation later sends.

Paper (Bui et al. 2025, Fig. 2): "You embody the persona in the description to complete the task." +
persona + "You have written a review for <x_j>: <y_j>" + the task for x. Two renderings:

* ``chat`` (free text, the paper's setting): everything in one user turn of the model's chat template;
  the response is the assistant's answer.
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

__all__ = ["PromptStyle", "build_prompt", "INSTRUCTION"]

INSTRUCTION = "You embody the persona in the description to complete the task."


@dataclass(frozen=True)
class PromptStyle:
    """How personas, exemplars and contexts are put into words.

    Args:
        kind: ``chat`` (free text) or ``transcript`` (multiple-choice surveys).
        exemplar_intro: words before an exemplar; for ``chat``, it is followed by ``x_j`` and ": " + ``y_j``
            (paper: "You have written a review for"); for ``transcript``, by the answers themselves.
        task_intro: words before the context x (paper: "Please write a review for"); empty uses x as is.
        instruction: the opening sentence.
    """

    kind: Literal["chat", "transcript"] = "chat"
    exemplar_intro: str = "You have written a review for"
    task_intro: str = ""
    instruction: str = INSTRUCTION

    @classmethod
    def survey(cls) -> PromptStyle:
        return cls(kind="transcript", exemplar_intro="Earlier in this survey you answered:")

    @classmethod
    def reviews(cls) -> PromptStyle:
        """Paper wording; contexts name the item, e.g. "a movie you rate 8/10" or "the movie Heat"."""
        return cls(kind="chat", exemplar_intro="You have written a review for",
                   task_intro="Please write a review for")


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
        if exemplar is not None:
            x_j, y_j = exemplar
            lead = style.exemplar_intro + (" " + x_j.strip() if x_j.strip() else "")
            parts.append(lead + ": " + y_j.strip())
        task = context.strip()
        parts.append((style.task_intro + " " + task + ".") if style.task_intro else task)
        return Chat.of("\n\n".join(parts))
    if exemplar is not None:
        parts.append(style.exemplar_intro + "\n" + exemplar[1].strip())
    return "\n\n".join(parts) + "\n\n" + context.rstrip() + "\nA:"
