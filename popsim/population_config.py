"""Scenario keys for whom to simulate (``population:``) and for randomised survey experiments (``experiments:``).

Kept apart from :mod:`popsim.config` so that the questionnaire schema and these two sections can change
independently; :class:`popsim.config.Scenario` holds one of each and calls :func:`check_population` and
:func:`check_experiments` for the checks that need the rest of the scenario (attributes, questions, agents).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

if TYPE_CHECKING:
    from popsim.config import Scenario

__all__ = ["PopulationConfig", "OversampleConfig", "ArmSpec", "ExperimentsConfig", "margin_attributes",
           "flatten_margin", "check_population", "check_experiments", "SUM_TOLERANCE"]

SUM_TOLERANCE = 0.005
"""How far a margin's shares may add up from 1 (rounded census figures); they are rescaled to sum to 1."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def margin_attributes(key: str) -> list[str]:
    """The attributes a margin key names: ``"sex"`` -> [sex], ``"age x sex"`` -> [age, sex]."""
    return [part.strip() for part in str(key).split(" x ")]


def flatten_margin(key: str, shares: Any) -> dict[tuple[str, ...], float]:
    """A margin's nested mapping as {(category, ...): share}, one level per attribute of ``key``."""
    depth = len(margin_attributes(key))
    out: dict[tuple[str, ...], float] = {}

    def walk(node: Any, prefix: tuple[str, ...]) -> None:
        if len(prefix) == depth:
            if isinstance(node, bool) or not isinstance(node, int | float):
                raise ValueError(f"population.margins.{key} at {' / '.join(prefix)} must be a share (a number); "
                                 f"got {node!r}")
            if node < 0:
                raise ValueError(f"population.margins.{key} at {' / '.join(prefix)} is negative ({node}); shares "
                                 "are between 0 and 1")
            out[prefix] = float(node)
            return
        if not isinstance(node, dict) or not node:
            level = margin_attributes(key)[len(prefix)]
            raise ValueError(f"population.margins.{key} needs one level of categories per attribute; at "
                             f"{' / '.join(prefix) or 'the top'} give {level}'s categories as a mapping")
        for cat, child in node.items():
            walk(child, (*prefix, _text(cat)))

    walk(shares, ())
    return out


def _text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


class OversampleConfig(_Strict):
    """Put at least ``min_agents`` agents in every cell of ``by``; weights keep population shares right."""

    by: list[str] = Field(description="Attributes whose cells (each combination of their values) are filled up.")
    min_agents: int = Field(30, gt=0, description="Agents at least in every cell (drawn with replacement where "
                            "a cell has fewer respondents).")

    @field_validator("by")
    @classmethod
    def _some(cls, v: list[str]) -> list[str]:
        if not v or len(set(v)) != len(v):
            raise ValueError("must name one or more distinct attributes, e.g. [race]")
        return v


class PopulationConfig(_Strict):
    """Whom the agents stand for, and with what weight each counts in every share."""

    mode: Literal["respondents", "reweighted", "synthetic"] = Field(
        "respondents", description="respondents: agents drawn from the held-out respondents as they are (by "
        "survey weight); reweighted: the same agents raked (weightipy) to the target `margins`, the held-out "
        "respondents too; synthetic: profiles built from the `margins` alone (every combination of their "
        "categories, drawn by the joint that matches them with the least added structure, then raked), for a "
        "population no respondent rows describe.")
    margins: dict[str, dict[Any, Any]] | None = Field(
        None, description="Target shares: `sex: {man: 0.49, woman: 0.51}`, or joint ones keyed `age x sex` "
        "with one nested level per attribute (`18-29: {man: 0.1, woman: 0.1}`). Each margin sums to 1; "
        "categories are the attribute's labels.")
    oversample: OversampleConfig | None = Field(
        None, description="Small cells get at least `min_agents` agents, down-weighted so population shares "
        "stay right.")

    @model_validator(mode="after")
    def _margins_fit_mode(self) -> PopulationConfig:
        if self.mode != "respondents" and not self.margins:
            raise ValueError(f"mode {self.mode} needs target `margins`; add population.margins or use mode "
                             "respondents")
        if self.mode == "respondents" and self.margins:
            raise ValueError("margins are targets for mode reweighted or synthetic; set population.mode to one "
                             "of them, or drop population.margins")
        for key, shares in (self.margins or {}).items():
            flat = flatten_margin(key, shares)
            total = sum(flat.values())
            if abs(total - 1) > SUM_TOLERANCE:
                raise ValueError(f"population.margins.{key} shares sum to {total:.3f}, not 1; fix them so they "
                                 "add up to 1")
        return self

    def targets(self) -> dict[str, dict[tuple[str, ...], float]]:
        """{margin key: {(category, ...): share}}, each margin rescaled to sum to exactly 1."""
        out = {}
        for key, shares in (self.margins or {}).items():
            flat = flatten_margin(key, shares)
            total = sum(flat.values())
            out[key] = {cats: share / total for cats, share in flat.items()}
        return out


class ArmSpec(_Strict):
    """One arm of a survey experiment: what its agents see differently (nothing = a control arm)."""

    name: str = Field(description="Arm name, recorded in responses.parquet's `arm` column.")
    wording: dict[str, str] = Field(default_factory=dict, description="Question id -> the wording this arm "
                                    "asks instead.")
    preamble: str | None = Field(None, description="Text shown before every question (e.g. an introduction).")
    information: str | None = Field(None, description="An information treatment: a fact shown before every "
                                    "question, after the preamble.")
    option_order: dict[str, Literal["reversed"] | list[str]] = Field(
        default_factory=dict, description="Question id -> `reversed` or the option wordings in the order shown.")


class ExperimentsConfig(_Strict):
    """A randomised experiment: arms assigned at random across agents, balanced (sizes differ by at most 1)."""

    arms: list[ArmSpec] = Field(description="Two or more arms; agents are split evenly among them (seeded).")
    control: str | None = Field(None, description="The arm effects are measured against (default: the first).")

    @model_validator(mode="after")
    def _arms(self) -> ExperimentsConfig:
        names = [a.name for a in self.arms]
        if len(names) < 2:
            raise ValueError("an experiment needs at least two arms; add one (a control arm may change nothing)")
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"arm names must be unique; duplicated: {', '.join(dup)}; rename one")
        if self.control is not None and self.control not in names:
            raise ValueError(f"control '{self.control}' is not an arm ({', '.join(names)}); name one of them")
        return self

    @property
    def control_arm(self) -> str:
        return self.control or self.arms[0].name


def check_population(scenario: Scenario) -> None:
    """Margins and oversampling name attributes of ``data.attributes`` (categories are checked on the data)."""
    pop = scenario.population
    if pop is None:
        return
    known = list(scenario.data.attributes)
    for key in pop.margins or {}:
        names = margin_attributes(key)
        for name in names:
            if name not in known:
                raise ValueError(f"population.margins.{key} names attribute '{name}', which is not in "
                                 f"data.attributes ({', '.join(known) or 'none'}); add it there or fix the key")
        if len(set(names)) != len(names):
            raise ValueError(f"population.margins.{key} names an attribute twice; name each once")
    for name in pop.oversample.by if pop.oversample else []:
        if name not in known:
            raise ValueError(f"population.oversample.by names attribute '{name}', which is not in data.attributes "
                             f"({', '.join(known) or 'none'}); add it there or fix the name")
    if scenario.kind != "survey":
        raise ValueError("`population` is for survey scenarios (agents are drawn from respondents); remove it")


def check_experiments(scenario: Scenario) -> None:
    """Arms change questions that exist, options that exist, and every arm gets agents."""
    exp = scenario.experiments
    if exp is None:
        return
    if scenario.kind != "survey":
        raise ValueError("`experiments` are for survey scenarios; remove the section")
    questions = {q.id: q for q in scenario.questions}
    for i, arm in enumerate(exp.arms):
        for field in ("wording", "option_order"):
            for qid in getattr(arm, field):
                if qid not in questions:
                    raise ValueError(f"experiments.arms.{i}.{field} names question '{qid}', which is not in "
                                     f"`questions` ({', '.join(questions)}); use one of their ids")
        for qid, order in arm.option_order.items():
            q = questions[qid]
            if q.free_text:
                raise ValueError(f"experiments.arms.{i}.option_order names free-text question '{qid}'; only "
                                 "multiple-choice questions have an option order")
            if q.type == "multi_select":
                raise ValueError(f"experiments.arms.{i}.option_order names multi-select question '{qid}', which is "
                                 "asked one option at a time (no listing to reorder); reword it or drop the entry")
            if order != "reversed" and sorted(order) != sorted(q.option_labels):
                raise ValueError(f"experiments.arms.{i}.option_order.{qid} must list each of {q.option_labels} "
                                 f"once; got {order}")
    agents = scenario.simulation.agents
    if agents < len(exp.arms):
        raise ValueError(f"experiments has {len(exp.arms)} arms but simulation.agents is {agents}, so arm "
                         f"'{exp.arms[agents].name}' would have no agents; raise simulation.agents to at least "
                         f"{len(exp.arms)} or drop an arm")
