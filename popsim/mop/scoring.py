"""LM likelihoods for MoP: a cache of logit sketches and the per-pair log-likelihood at temperature tau.

Scoring (record, persona, exemplar) prompts with the frozen LM dominates training time. A pair that
stays in the top-M is not scored again: :class:`ScoreCache` keeps a :class:`~popsim.lm.sketch.LogitSketch`
per (LM identity, rendered prompt, continuation), in memory and optionally in a SQLite file shared
across runs, and the temperature is still learned from the sketch.

The key holds the LM's ``identity`` (weights' digest, dtype, ...; see :mod:`popsim.lm.identity`), not
its name: the file is machine-wide, and a name is the same for an fp32 and a bf16 load, or for two
checkpoints in folders of the same basename, whose scores differ. It also holds the sketch layout, so a
change of ``TOP_K`` or ``TAIL_BINS`` never reads sketches of another shape.
"""

from __future__ import annotations

import hashlib
import io
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from popsim.lm.base import LanguageModel, Prompt
from popsim.lm.sketch import TAIL_BINS, TOP_K, LogitSketch, sketch_logprob

__all__ = ["ScoreCache", "pair_log_likelihood"]


def _pack(s: LogitSketch) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, target=s.target, top=s.top, count=s.tail_count, mean=s.tail_mean, var=s.tail_var)
    return buf.getvalue()


def _unpack(blob: bytes) -> LogitSketch:
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        return LogitSketch(z["target"], z["top"], z["count"], z["mean"], z["var"])


class ScoreCache:
    """Sketches of LM likelihoods keyed by (LM identity, rendered prompt, continuation).

    Args:
        lm: a backend that supports ``score_sketches`` (transformers and the test doubles; a remote API
            without logits cannot train MoP, and this raises its CapabilityError before any work).
        path: optional SQLite file so later runs and epochs reuse the scores.
    """

    def __init__(self, lm: LanguageModel, path: str | Path | None = None) -> None:
        lm.require("score_sketches")
        self.lm = lm
        self.identity = f"{lm.identity}\x00sketch-k{TOP_K}-b{TAIL_BINS}"
        self.memory: dict[str, LogitSketch] = {}
        self.hits = 0
        self.misses = 0
        self._db: sqlite3.Connection | None = None
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path))
            self._db.execute("CREATE TABLE IF NOT EXISTS sketch (key TEXT PRIMARY KEY, blob BLOB)")

    def _key(self, rendered: str, continuation: str) -> str:
        return hashlib.sha256(f"{self.identity}\x00{rendered}\x00{continuation}".encode()).hexdigest()

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def get(self, prompts: Sequence[Prompt], continuations: Sequence[str]) -> list[LogitSketch]:
        """Sketches for each pair; missing ones are computed in one batched LM call."""
        keys = [self._key(self.lm.render(p), c) for p, c in zip(prompts, continuations, strict=True)]
        missing = [k for k in dict.fromkeys(keys) if k not in self.memory]
        if missing and self._db is not None:
            for start in range(0, len(missing), 500):
                chunk = missing[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for key, blob in self._db.execute(f"SELECT key, blob FROM sketch WHERE key IN ({marks})", chunk):
                    self.memory[key] = _unpack(blob)
        todo = {k: i for i, k in enumerate(keys) if k not in self.memory}
        self.misses += len(todo)
        self.hits += len(keys) - len(todo)
        if todo:
            idx = list(todo.values())
            sketches = self.lm.score_sketches([prompts[i] for i in idx], [continuations[i] for i in idx])
            new = dict(zip(todo.keys(), sketches, strict=True))
            self.memory.update(new)
            if self._db is not None:
                with self._db:
                    self._db.executemany(
                        "INSERT OR REPLACE INTO sketch VALUES (?, ?)", [(k, _pack(s)) for k, s in new.items()]
                    )
        return [self.memory[k] for k in keys]


def pair_log_likelihood(
    cache: ScoreCache,
    prompts: Sequence[Prompt],
    responses: Sequence[str],
    options: Sequence[tuple[str, ...] | None],
    temperature: torch.Tensor,
    *,
    offsets: Sequence[torch.Tensor | None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """log p_LM^tau(y | prompt) per row (differentiable in ``temperature``, shape (R,)), and y's token count.

    For a multiple-choice row the likelihood is normalised over the row's options (as simulation
    samples answers); for free text it is the continuation's log-likelihood. ``offsets`` (optional, one
    per row: a tensor with one value per option, or ``None``) are added to a multiple-choice row's option
    log-likelihoods before that normalisation (learned option offsets; differentiable in them too).
    """
    flat_prompts, flat_conts, row_of, is_target = [], [], [], []
    for r, (p, y, opts) in enumerate(zip(prompts, responses, options, strict=True)):
        conts = [" " + o for o in opts] if opts is not None else [y]
        for c in conts:
            flat_prompts.append(p)
            flat_conts.append(c)
            row_of.append(r)
            is_target.append(c.strip() == y.strip() if opts is not None else True)
    sketches = cache.get(flat_prompts, flat_conts)
    row = torch.tensor(row_of)
    lp = sketch_logprob(sketches, temperature[row])
    if offsets is not None:
        # one value per flattened continuation: a row's options, or its single free-text continuation
        pieces = []
        for r, (b, opts) in enumerate(zip(offsets, options, strict=True)):
            if b is not None and (opts is None or len(b) != len(opts)):
                raise ValueError(f"offsets[{r}] must be None or have one value per option of row {r}")
            pieces.append(b if b is not None else torch.zeros(len(opts) if opts is not None else 1))
        lp = lp + torch.cat(pieces)
    target = torch.tensor(is_target)
    n = len(prompts)
    log_num = torch.full((n,), float("-inf")).index_put((row[target],), lp[target], accumulate=False)
    shift = torch.full((n,), float("-inf")).scatter_reduce(0, row, lp.detach(), reduce="amax")
    log_den = shift + torch.zeros(n).index_add(0, row, (lp - shift[row]).exp()).log()
    is_mc = torch.tensor([o is not None for o in options])
    ll = torch.where(is_mc, log_num - log_den, log_num)
    n_tokens = torch.tensor([float(s.n_tokens) for s, t in zip(sketches, is_target, strict=True) if t])
    return ll, n_tokens
