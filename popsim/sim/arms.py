"""Survey-experiment arms in the simulation: which arm each agent is in, and what that arm's agents see.

An arm can reword questions, reorder their options, and show a preamble and an information treatment
before every question (:class:`popsim.population_config.ArmSpec`). Answers are recorded with the
question's own option wordings whatever order they were shown in, so arms compare option by option.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from popsim.config import QuestionSpec
from popsim.population_config import ArmSpec, ExperimentsConfig
from popsim.questions import expand_items

__all__ = ["ArmPlan", "arm_plans", "assign_arms"]


@dataclass(frozen=True)
class ArmPlan:
    """What one arm's agents are asked: a question variant per changed question, and text before each."""

    name: str
    context: str = ""  # preamble and information treatment, shown before each question
    variants: dict[str, QuestionSpec] = field(default_factory=dict)

    def question(self, question: QuestionSpec) -> QuestionSpec:
        return self.variants.get(question.id, question)


def _variant(question: QuestionSpec, arm: ArmSpec) -> QuestionSpec:
    update: dict = {}
    if question.id in arm.wording:
        update["text"] = arm.wording[question.id]
    order = arm.option_order.get(question.id)
    if order is not None:
        labels = question.option_labels[::-1] if order == "reversed" else list(order)
        if isinstance(question.options, dict):
            code = {label: c for c, label in question.options.items()}
            update["options"] = {code[label]: label for label in labels}
        else:
            update["options"] = labels
    return question.model_copy(update=update) if update else question


def arm_plans(spec: ExperimentsConfig, questions: Sequence[QuestionSpec]) -> dict[str, ArmPlan]:
    """One :class:`ArmPlan` per arm of ``spec``; ``questions`` as the scenario lists them (an arm changes a
    question, and a multi-select's or a ranking's variant is expanded into the items the simulator asks)."""
    plans = {}
    for arm in spec.arms:
        context = "\n".join(t.strip() for t in (arm.preamble, arm.information) if t and t.strip())
        variants = {item.id: item for q in questions if (v := _variant(q, arm)) is not q
                    for item in expand_items([v])}
        plans[arm.name] = ArmPlan(arm.name, context, variants)
    return plans


def assign_arms(spec: ExperimentsConfig, n: int, seed: int) -> np.ndarray:
    """Each of ``n`` agents' arm: the arms repeated to length n (sizes differ by at most one), shuffled."""
    names = np.array([a.name for a in spec.arms], dtype=object)
    return np.random.default_rng([seed, 4]).permutation(np.resize(names, n))
