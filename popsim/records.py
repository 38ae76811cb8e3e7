"""Records (x, y) a MoP model is fitted on, and the exemplar pool it draws (x_j, y_j) from (plain data).

A record is one human response y to a context x. For a survey, x is the respondent's profile rendered
as text plus the question ("About you: a 45-year-old woman, ... Q: ..."), y is the chosen option, and
``options`` lists the question's options (the likelihood is then normalised over them, exactly as
simulation samples answers). For reviews, x is the instruction/item and y the review text.

``gate_texts`` (optional) is what the gates encode as x when it differs from the prompt context: a
survey agent holds one persona and exemplar for all its questions, drawn from its profile alone.
``groups`` identifies the person behind each record: a record's own exemplar (same group) is masked. A
pool given without groups gets ids of its own ("exemplar-j") that no record shares.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from popsim.exceptions import DataError

__all__ = ["Records", "ExemplarPool"]


def _as_groups(groups: Sequence | np.ndarray | None, n: int) -> np.ndarray:
    if groups is None:
        return np.arange(n).astype(str)
    arr = np.asarray(groups).astype(str)
    if arr.shape != (n,):
        raise DataError(f"groups has {arr.shape[0]} entries for {n} records; pass one per record")
    return arr


@dataclass(frozen=True)
class Records:
    """A table of (context, response) records with optional options, groups, weights and attributes."""

    contexts: list[str]
    responses: list[str]
    options: list[tuple[str, ...] | None] | None = None
    groups: np.ndarray | None = None
    weights: np.ndarray | None = None
    attributes: pd.DataFrame | None = None
    question_ids: list[str] | None = None
    gate_texts: list[str] | None = None

    def __post_init__(self) -> None:
        n = len(self.contexts)
        if self.gate_texts is not None and len(self.gate_texts) != n:
            raise DataError(f"{len(self.gate_texts)} gate texts for {n} contexts; pass one per context")
        if n == 0:
            raise DataError("records are empty; the population table has no usable rows")
        if len(self.responses) != n:
            raise DataError(f"{len(self.responses)} responses for {n} contexts; pass one per context")
        options = self.options if self.options is not None else [None] * n
        for i, (resp, opts) in enumerate(zip(self.responses, options, strict=True)):
            if opts is not None and resp not in opts:
                raise DataError(f"record {i}: response {resp!r} is not one of its options {list(opts)}")
        object.__setattr__(self, "options", list(options))
        object.__setattr__(self, "groups", _as_groups(self.groups, n))
        weights = np.ones(n) if self.weights is None else np.asarray(self.weights, dtype=float)
        if weights.shape != (n,) or not np.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
            raise DataError("record weights must be finite, >= 0, one per record and not all zero")
        object.__setattr__(self, "weights", weights)
        if self.attributes is not None and len(self.attributes) != n:
            raise DataError(f"attributes have {len(self.attributes)} rows for {n} records")

    def __len__(self) -> int:
        return len(self.contexts)

    def question_id(self, i: int) -> str | None:
        """Record i's survey question id (``None`` without ids: free text)."""
        return self.question_ids[i] if self.question_ids is not None else None

    def subset(self, index: Sequence[int] | np.ndarray) -> Records:
        idx = np.asarray(index, dtype=int)
        return Records(
            contexts=[self.contexts[i] for i in idx],
            responses=[self.responses[i] for i in idx],
            options=[self.options[i] for i in idx],  # type: ignore[index]
            groups=self.groups[idx],  # type: ignore[index]
            weights=self.weights[idx],  # type: ignore[index]
            attributes=None if self.attributes is None else self.attributes.iloc[idx].reset_index(drop=True),
            question_ids=None if self.question_ids is None else [self.question_ids[i] for i in idx],
            gate_texts=None if self.gate_texts is None else [self.gate_texts[i] for i in idx],
        )

    @property
    def gate_inputs(self) -> list[str]:
        """What the gates encode as x: ``gate_texts`` (e.g. a respondent profile) or the contexts."""
        return self.gate_texts if self.gate_texts is not None else self.contexts


@dataclass(frozen=True)
class ExemplarPool:
    """N exemplars (x_j, y_j), each with the group (person) it came from and optional attributes.

    ``texts`` is what the encoder sees for h(x_j, y_j) and what persona synthesis clusters.
    ``answers`` (surveys, optional): per exemplar, every answered question's transcript line by question id (in
    survey order) and ``shown`` the ids ``outputs`` lists; then :meth:`output_for` shows an agent asked a
    question the exemplar's own answer to it (see ``mop.exemplar_asked``). ``stand_ins`` (optional, with
    ``answers``): question id -> the ids whose answer to show in its place, first answered one wins (see
    :func:`popsim.data.nearest_questions`: for questions no exemplar answered, the most similar ones).
    """

    inputs: list[str]
    outputs: list[str]
    groups: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=str))
    attributes: pd.DataFrame | None = None
    answers: list[dict[str, str]] | None = None
    shown: list[tuple[str, ...]] | None = None
    stand_ins: dict[str, tuple[str, ...]] | None = None

    def __post_init__(self) -> None:
        n = len(self.inputs)
        if n == 0:
            raise DataError("the exemplar pool is empty; the training split has no usable rows")
        if len(self.outputs) != n:
            raise DataError(f"{len(self.outputs)} exemplar outputs for {n} inputs")
        if len(self.groups):
            object.__setattr__(self, "groups", _as_groups(self.groups, n))
        else:  # ids of their own: record groups default to row numbers, and "0".."N-1" would mask strangers
            object.__setattr__(self, "groups", np.asarray([f"exemplar-{j}" for j in range(n)]))
        if self.answers is not None or self.shown is not None:
            if self.answers is None or self.shown is None or not len(self.answers) == len(self.shown) == n:
                raise DataError("an exemplar pool's answers and shown ids go together, one entry per exemplar")
        if self.stand_ins is not None and self.answers is None:
            raise DataError("an exemplar pool's stand-in questions need its answers (survey_exemplars(asked=True))")

    def __len__(self) -> int:
        return len(self.inputs)

    def output_for(self, j: int, question_id: str | None = None) -> str:
        """y_j as shown to someone asked ``question_id``: with ``answers``, the transcript always holds the
        exemplar's answer to that question, or to its first answered stand-in (in place of its last other answer,
        so its length stays), because this LM follows a lone shown answer on the asked question's scale and
        barely reads one among several; else ``outputs[j]``."""
        if self.answers is None or self.shown is None or question_id is None:  # (both or neither: see above)
            return self.outputs[j]
        answers, shown = self.answers[j], self.shown[j]
        candidates = self.stand_ins.get(question_id, (question_id,)) if self.stand_ins else (question_id,)
        question_id = next((q for q in candidates if q in answers), None)
        if question_id is None or question_id in shown:
            return self.outputs[j]
        keep = set(shown[:-1]) | {question_id}
        return "\n".join(line for q, line in answers.items() if q in keep)

    @property
    def has_groups(self) -> bool:
        """False when the pool was given without groups (no record's own exemplar can then be masked)."""
        return not all(g == f"exemplar-{j}" for j, g in enumerate(self.groups))

    @property
    def texts(self) -> list[str]:
        return [(x + "\n" + y).strip() for x, y in zip(self.inputs, self.outputs, strict=True)]

    @classmethod
    def from_records(cls, records: Records, n: int, *, seed: int = 0) -> ExemplarPool:
        """Draw ``n`` records, stratified by response (free text: uniformly), seeded."""
        rng = np.random.default_rng(seed)
        n = min(n, len(records))
        strata = pd.Series(
            [r if o is not None else "" for r, o in zip(records.responses, records.options, strict=True)]
        )
        chosen: list[int] = []
        groups = strata.groupby(strata).indices
        for key in sorted(groups):
            idx = np.asarray(groups[key])
            take = int(round(n * len(idx) / len(records)))
            chosen += list(rng.choice(idx, size=min(take, len(idx)), replace=False))
        rest = np.setdiff1d(np.arange(len(records)), chosen)
        if len(chosen) < n:
            chosen += list(rng.choice(rest, size=n - len(chosen), replace=False))
        chosen = sorted(chosen[:n])
        sub = records.subset(chosen)
        return cls(sub.contexts, sub.responses, sub.groups, sub.attributes)  # type: ignore[arg-type]
