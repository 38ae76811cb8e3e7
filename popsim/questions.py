"""Questionnaire features of a survey scenario: question types, skip logic (``ask_if``) and asked items.

A question is asked as one or more *items*, each a single-choice question the LM scores over its options:

* ``single`` (the default) and ``scale`` (ordinal points, e.g. 0-10): one item, the question itself;
* ``multi_select`` ("select all that apply"): one yes/no item per option, id ``<question>[<option>]``,
  "Q: <text> Do you select "<option>"? A: Yes/No", each drawn on its own (the LM scores every option
  independently, as a respondent ticks boxes one by one); the share choosing an option is its items' "Yes"
  share, compared with the real share option by option (each a 2-way distribution);
* ``ranking``: ranked the way people rank by hand, top first: position items ``<question>[#1]``,
  ``[#2]``, ... ask "Which one do you rank first?" over all options, then "... second?" over the options
  not yet ranked, and so on; the option left last takes the last rank, so every option gets a distinct rank.
  Evaluation scores each option's rank distribution (:func:`popsim.questionnaire.scored_items`).

``ask_if`` makes a question conditional, as in a questionnaire's skip logic. A condition tests an
attribute of the respondent or the answer to an earlier question::

    ask_if: {question: eats_steak, in: ["Yes"]}          # answered one of these options
    ask_if: {question: sep_beds, not_in: ["Never"]}      # answered, and not one of these
    ask_if: {attribute: age, in: ["18-29", "30-44"]}     # attribute label is one of these
    ask_if: {all: [<condition>, ...]}                    # every one holds ({any: [...]}: at least one)

On a ``multi_select`` question, ``in`` holds when any listed option was chosen and ``not_in`` when the question
was answered and none was. A condition on a question the respondent (or agent) was not asked is not met.
Conditions may name only earlier questions, so questions are asked in file order.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

__all__ = ["QuestionSpec", "Condition", "SkipLogic", "expand_items", "item_options", "rank_position",
           "check_questionnaire", "YES", "NO", "item_parent"]

YES, NO = "Yes", "No"
"""The options of a multi_select item."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, v: Any, info: ValidationInfo) -> Any:
        """pydantic reads `agents: true` as 1; a boolean where a number belongs is a typo, so refuse it."""
        if isinstance(v, bool) and info.field_name is not None:
            annotation = cls.model_fields[info.field_name].annotation
            if annotation in (int, float, int | None, float | None):
                raise ValueError(f"must be a number, not {str(v).lower()}")
        return v


def _code(key: Any) -> str:
    """Answer codes as text: 1, 1.0 and '1' are the same code."""
    if isinstance(key, float) and key.is_integer():
        key = int(key)
    return str(key)


class Condition(_Strict):
    """When a question is asked: a test on an attribute or an earlier answer, or all/any of several."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, serialize_by_alias=True)

    question: str | None = Field(None, description="Id of an earlier question whose answer is tested.")
    attribute: str | None = Field(None, description="Name of a data.attributes entry whose label is tested.")
    in_: list[str | int | float] | None = Field(
        None, alias="in", description="Met when the answer (code or wording) or label is one of these; on a "
        "multi_select question, when any of these options was chosen.")
    not_in: list[str | int | float] | None = Field(
        None, description="Met when there is an answer and it is none of these.")
    all: list[Condition] | None = Field(None, description="Met when every condition listed is met.")
    any: list[Condition] | None = Field(None, description="Met when at least one condition listed is met.")

    @field_validator("in_", "not_in")
    @classmethod
    def _as_text(cls, v: list | None) -> list[str] | None:
        if v is not None and not v:
            raise ValueError("must list at least one value")
        return None if v is None else [_code(x) for x in v]

    @model_validator(mode="after")
    def _one_form(self) -> Condition:
        tests = [k for k in ("question", "attribute") if getattr(self, k) is not None]
        groups = [k for k in ("all", "any") if getattr(self, k) is not None]
        values = [k for k in ("in_", "not_in") if getattr(self, k) is not None]
        if len(tests) + len(groups) != 1:
            raise ValueError("a condition is one of {question: ID, in: [...]}, {attribute: NAME, in: [...]}, "
                             "{all: [...]} or {any: [...]}; give exactly one of question, attribute, all, any")
        if tests and len(values) != 1:
            raise ValueError(f"a condition on {tests[0]} '{getattr(self, tests[0])}' needs exactly one of "
                             "`in: [...]` or `not_in: [...]`")
        if groups and (values or not getattr(self, groups[0])):
            raise ValueError(f"`{groups[0]}` takes a non-empty list of conditions (and no in/not_in beside it)")
        return self

    def leaves(self) -> Iterable[Condition]:
        """The question/attribute tests inside this condition."""
        if self.all is not None or self.any is not None:
            for part in self.all or self.any or []:
                yield from part.leaves()
        else:
            yield self

    def describe(self, labels: Mapping[str, Mapping[str, str]] | None = None) -> str:
        """The condition in words, e.g. "sep_beds is not Never" (``labels``: question -> code -> wording)."""
        if self.all is not None or self.any is not None:
            join = " and " if self.all is not None else " or "
            return "(" + join.join(c.describe(labels) for c in (self.all or self.any or [])) + ")"
        verb = "is" if self.in_ is not None else "is not"
        words = (labels or {}).get(self.question or "", {})
        return f"{self.question or self.attribute} {verb} " + " or ".join(
            words.get(v, v) for v in self.in_ or self.not_in or [])


class QuestionSpec(_Strict):
    """A survey question: single choice, scale, multi_select or free text, optionally asked only if ..."""

    id: str = Field(description="Short unique id, used in outputs.")
    text: str = Field(description="The question as asked (on an SPSS/Stata/SAS file: the variable label if left "
                      "out).")
    type: Literal["single", "scale", "multi_select", "ranking"] = Field(
        "single", description="single: choose one option; scale: choose one point of an ordered scale (options "
        "or `points`, low to high; the report adds mean scores); multi_select: select all that apply (one yes/no "
        "item per option, data in one column per option, see `columns`); ranking: order the options (asked "
        "top first, then the next among those left; data: one rank column per option, see `columns`).")
    column: str | None = Field(None, description="Data column with real answers (omit for a new question).")
    columns: dict[str, str] | None = Field(
        None, description="multi_select: option (wording or code) -> the data column saying whether it was chosen "
        "(empty, 0, No or False = not chosen; anything else = chosen; a respondent whose cells are all empty "
        "gave no answer); ranking: option -> the column holding its rank (1 = first).")
    options: dict[str, str] | list[str] | None = Field(
        None, description="Answer codes -> wording (ordered: ordinal metrics use this order), or a list of "
        "wordings when the data holds the wording itself. Omit for a free-text question, or on an SPSS/Stata/SAS "
        "file to take the column's value labels (less its missing codes).")
    points: list[int] | None = Field(
        None, description="scale: [low, high], the integer points of the scale (e.g. [0, 10]) as its options, "
        "instead of `options`.")
    free_text: bool = Field(False, description="Answer in free text instead of choosing an option.")
    missing: list[str | int | float] | None = Field(
        None, description="Answers (codes or texts, or an SPSS/Stata value label) that mean no answer, e.g. "
        "[\"Don't know\", 8, 9]; replaces data.missing for this question ([] = none). Other answers, \"None\" "
        "and \"NA\" included, are answers.")
    ask_if: Condition | None = Field(
        None, description="Ask only those who meet this condition on attributes or earlier answers, e.g. "
        "{question: eats_steak, in: [\"Yes\"]} (see docs/scenarios.md); real and simulated shares are then over "
        "those asked.")

    @field_validator("options", mode="before")
    @classmethod
    def _codes_as_text(cls, v: Any) -> Any:
        return {_code(k): str(val) for k, val in v.items()} if isinstance(v, dict) else v

    @field_validator("columns", mode="before")
    @classmethod
    def _column_keys_as_text(cls, v: Any) -> Any:
        return {_code(k): val for k, val in v.items()} if isinstance(v, dict) else v

    @field_validator("missing")
    @classmethod
    def _missing_not_an_option(cls, v: list | None, info: ValidationInfo) -> list | None:
        options = info.data.get("options")
        taken = set() if not options else (set(options) | set(options.values())) if isinstance(options, dict) \
            else set(options)
        for rule in v or []:
            if _code(rule) in taken:
                shown = _code(rule) if isinstance(rule, int | float) else f"'{rule}'"
                raise ValueError(f"names {shown}, which is also an option of question '{info.data.get('id')}'; "
                                 "remove it from missing or from options")
        return v

    @model_validator(mode="before")
    @classmethod
    def _points_as_options(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("points") is not None and data.get("options") is None:
            points = data["points"]
            if (isinstance(points, list) and len(points) == 2 and all(isinstance(p, int) for p in points)
                    and points[0] < points[1]):
                data = {**data, "options": [str(p) for p in range(points[0], points[1] + 1)]}
        return data

    @model_validator(mode="after")
    def _options_or_free(self) -> QuestionSpec:
        where = f"question '{self.id}'"
        if self.points is not None:
            if self.type != "scale":
                raise ValueError(f"{where}: `points` is for type: scale; use options, or set type: scale")
            if len(self.points) != 2 or self.points[0] >= self.points[1]:
                raise ValueError(f"{where}: `points` must be [low, high] with low < high, e.g. [0, 10]")
        if self.free_text and self.type != "single":
            raise ValueError(f"{where}: free_text does not go with type: {self.type}; drop one of them")
        if not self.free_text and not self.options:
            raise ValueError(f"{where} needs options, or free_text: true")
        if self.options is not None and len(self.option_labels) != len(set(self.option_labels)):
            raise ValueError(f"{where} has duplicate option wordings; give each option its own wording")
        if self.type == "ranking" and len(self.option_labels) < 2:
            raise ValueError(f"{where} is a ranking: give at least two options to rank")
        if self.type in ("multi_select", "ranking"):
            if self.column is not None:
                raise ValueError(f"{where} is {self.type}: its data is one column per option; replace `column` "
                                 "with `columns: {option: column, ...}`")
            if self.columns is not None:
                known = set(self.code_to_label) | set(self.option_labels)
                unknown = [k for k in self.columns if k not in known]
                if unknown:
                    raise ValueError(f"{where}: `columns` names option '{unknown[0]}', which is not one of its "
                                     f"options {self.option_labels}; fix the key")
                covered = {self.code_to_label.get(k, k) for k in self.columns}
                left = [o for o in self.option_labels if o not in covered]
                if left:
                    raise ValueError(f"{where}: `columns` has no column for option '{left[0]}'; add one per option")
        elif self.columns is not None:
            raise ValueError(f"{where}: `columns` (one data column per option) is for type: multi_select or "
                             "ranking; use `column`, or set the type")
        return self

    @property
    def option_labels(self) -> list[str]:
        if self.options is None:
            return []
        return list(self.options.values()) if isinstance(self.options, dict) else list(self.options)

    @property
    def code_to_label(self) -> dict[str, str]:
        if isinstance(self.options, dict):
            return dict(self.options)
        return {label: label for label in self.option_labels}

    def option_columns(self) -> dict[str, str]:
        """multi_select / ranking: option wording -> its data column (empty without data)."""
        return {self.code_to_label.get(k, k): c for k, c in (self.columns or {}).items()}

    @property
    def has_data(self) -> bool:
        return self.column is not None or self.columns is not None


def item_id(question: str, option: str) -> str:
    return f"{question}[{option}]"


def item_parent(item: str) -> tuple[str, str | None]:
    """(question id, option) of an item id: ``q[opt]`` -> (q, opt); a plain id -> (id, None)."""
    if item.endswith("]") and "[" in item:
        question, _, option = item.partition("[")
        return question, option[:-1]
    return item, None


def _item_text(text: str, option: str) -> str:
    text = text.strip()
    if "all that apply" not in text.lower():
        text += " (Select all that apply.)"
    return f'{text} Do you select "{option}"?'


_ORDINALS = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth"]


def rank_position(item: str) -> int | None:
    """n for a ranking's position item ``q[#n]``, else None."""
    _, option = item_parent(item)
    return int(option[1:]) if option and option.startswith("#") and option[1:].isdigit() else None


def expand_items(questions: Sequence[QuestionSpec]) -> list[QuestionSpec]:
    """The items the simulator asks, in questionnaire order (see the module docstring).

    A multi_select question becomes one yes/no item per option (``column``: that option's data column); a
    ranking of k options becomes k - 1 position items ``q[#1]`` ... (which option comes first, then next among
    those left: :func:`item_options`; the last is what remains); every other question is its own item. Items
    keep their question's ``ask_if``.
    """
    items = []
    for q in questions:
        if q.type == "ranking":
            for n in range(1, len(q.option_labels)):
                place = _ORDINALS[n - 1] if n <= len(_ORDINALS) else f"number {n}"
                items.append(QuestionSpec(id=item_id(q.id, f"#{n}"), text=f"{q.text.strip()} Which one do you rank "
                                          f"{place}?", options=q.option_labels, ask_if=q.ask_if))
            continue
        if q.type != "multi_select":
            items.append(q)
            continue
        columns = q.option_columns()
        for option in q.option_labels:
            items.append(QuestionSpec(id=item_id(q.id, option), text=_item_text(q.text, option),
                                      column=columns.get(option), options=[YES, NO], ask_if=q.ask_if))
    return items


def item_options(item: QuestionSpec, answers: Mapping[str, str | None]) -> tuple[str, ...]:
    """The options an item is asked with: a ranking position's options less those ranked before it (by the
    same respondent or agent, ``answers``: item id -> answer); any other item's options."""
    n = rank_position(item.id)
    if n is None:
        return tuple(item.option_labels)
    question, _ = item_parent(item.id)
    taken = {answers.get(item_id(question, f"#{m}")) for m in range(1, n)}
    return tuple(o for o in item.option_labels if o not in taken)


class SkipLogic:
    """Decides, item by item, whether a respondent or agent is asked, from its attributes and earlier answers.

    ``answers`` maps item ids to the answer text, or to ``None`` when the item was settled without an answer
    (not asked, or no answer in the data); an item not in ``answers`` is still pending.
    """

    def __init__(self, items: Sequence[QuestionSpec]) -> None:
        self.items = list(items)
        self._parts: dict[str, list[tuple[str, str]]] = {}  # multi_select question -> [(item, option)]
        for item in self.items:
            parent, option = item_parent(item.id)
            if option is not None and rank_position(item.id) is None:
                self._parts.setdefault(parent, []).append((item.id, option))
        self._labels = {q.id: q.code_to_label for q in self.items}

    @property
    def conditional(self) -> bool:
        return any(q.ask_if is not None for q in self.items)

    def asked(self, item: QuestionSpec, answers: Mapping[str, str | None], profile: Mapping[str, Any]) -> bool | None:
        """True (ask it), False (skip it) or None (an answer it depends on is still pending)."""
        return True if item.ask_if is None else self._met(item.ask_if, answers, profile)

    def _met(self, cond: Condition, answers: Mapping[str, str | None], profile: Mapping[str, Any]) -> bool | None:
        if cond.all is not None or cond.any is not None:
            results = [self._met(c, answers, profile) for c in (cond.all or cond.any or [])]
            decided = [r for r in results if r is not None]
            if cond.all is not None:
                return False if False in decided else (None if None in results else True)
            return True if True in decided else (None if None in results else False)
        if cond.attribute is not None:
            value = profile.get(f"attr_{cond.attribute}", profile.get(cond.attribute))
            return _test(None if value is None or pd.isna(value) else str(value), cond)
        parts = self._parts.get(cond.question or "")
        if parts is not None:  # multi_select: the options chosen
            if any(item not in answers for item, _ in parts):
                return None
            given = [(option, answers[item]) for item, option in parts if answers[item] is not None]
            if not given:
                return False
            chosen = {option for option, answer in given if answer == YES}
            wanted = set(self._wordings(cond.question or "", cond.in_ or cond.not_in or []))
            return bool(chosen & wanted) if cond.in_ is not None else not chosen & wanted
        if cond.question not in answers:
            return None
        answer = answers[cond.question]
        return _test(answer, cond, self._labels.get(cond.question or "", {}))

    def _wordings(self, question: str, values: Sequence[str]) -> list[str]:
        labels = self._labels.get(question) or {}
        parent_labels = {o: o for _, o in self._parts.get(question, [])}
        return [labels.get(v, parent_labels.get(v, v)) for v in values]


def _test(value: str | None, cond: Condition, labels: Mapping[str, str] | None = None) -> bool:
    """``in``/``not_in`` on one answer or label (codes read as their wording); no value: not met."""
    if value is None:
        return False
    labels = labels or {}
    wanted = {labels.get(v, v) for v in (cond.in_ or cond.not_in or [])}
    return value in wanted if cond.in_ is not None else value not in wanted


def check_questionnaire(questions: Sequence[QuestionSpec], attributes: Mapping[str, Any]) -> None:
    """Every ``ask_if`` names a known attribute, or an earlier choice question and its options; ValueError
    (one line, naming the key and the fix) otherwise. ``attributes``: data.attributes (name -> spec)."""
    position = {q.id: i for i, q in enumerate(questions)}
    by_id = {q.id: q for q in questions}
    for i, q in enumerate(questions):
        if "[" in q.id or "]" in q.id:
            raise ValueError(f"`questions[{q.id}].id` must not contain [ or ] (they mark a multi_select option's "
                             "item in outputs); rename it")
        if q.ask_if is None:
            continue
        where = f"`questions[{q.id}].ask_if`"
        for leaf in q.ask_if.leaves():
            values = leaf.in_ or leaf.not_in or []
            if leaf.attribute is not None:
                if leaf.attribute not in attributes:
                    raise ValueError(f"{where} names attribute '{leaf.attribute}', which is not in data.attributes;"
                                     f" {_hint(leaf.attribute, list(attributes), 'data.attributes')}")
                spec = attributes[leaf.attribute]
                known = list(getattr(spec, "bin_labels", None) or (getattr(spec, "labels", None) or {}).values())
                odd = [v for v in values if known and v not in known]
                if odd:
                    raise ValueError(f"{where} tests attribute '{leaf.attribute}' for '{odd[0]}', which is not one "
                                     f"of its labels {known}; use one of them")
                continue
            name = leaf.question or ""
            if name not in by_id:
                raise ValueError(f"{where} names question '{name}', which is not in `questions`; "
                                 f"{_hint(name, list(by_id), 'questions')}")
            if name == q.id:
                raise ValueError(f"{where} names question '{q.id}' itself (a circular skip); a condition may only "
                                 "name earlier questions")
            if position[name] > i:
                loop = _cycle(by_id, q.id, name)
                if loop:
                    raise ValueError(f"{where}: circular skip {' -> '.join(loop)}; a condition may only name "
                                     "earlier questions, so break the loop")
                raise ValueError(f"{where} names question '{name}', which comes later; move '{name}' before "
                                 f"'{q.id}' (a condition may only name earlier questions)")
            target = by_id[name]
            if target.free_text or target.type == "ranking":
                kind = "free-text" if target.free_text else "ranking"
                raise ValueError(f"{where} names {kind} question '{name}'; a condition can only test a choice "
                                 "question (single, scale, multi_select) or an attribute")
            known = set(target.code_to_label) | set(target.option_labels)
            odd = [v for v in values if v not in known]
            if odd:
                raise ValueError(f"{where} tests question '{name}' for option '{odd[0]}', which is not one of its "
                                 f"options {target.option_labels}; use an option's wording or code")


def _hint(name: str, known: list[str], where: str) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f"did you mean '{close[0]}'?" if close else f"use one of {where}: {', '.join(known) or 'none defined'}"


def _cycle(by_id: Mapping[str, QuestionSpec], start: str, first: str) -> list[str]:
    """The chain start -> first -> ... -> start through ask_if references, if there is one."""
    path, seen = [start, first], {start, first}
    stack = [(first, path)]
    while stack:
        current, chain = stack.pop()
        cond = by_id[current].ask_if
        for leaf in cond.leaves() if cond else []:
            nxt = leaf.question
            if nxt == start:
                return [*chain, start]
            if nxt in by_id and nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*chain, nxt]))
    return []
