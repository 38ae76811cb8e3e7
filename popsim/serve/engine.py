"""The served LM's side of ``popsim serve``: tokens with character offsets, and batched LM work.

Two kinds of batched work go through the :class:`~popsim.serve.batcher.MicroBatcher`:

* :class:`GenerateJob` - grouped by ``(max_tokens, stop)`` into one ``lm.generate`` call with per-row
  temperatures and seeds (rows are independent, so batching does not change any text);
* :class:`ScoreJob` - per-token logprobs of target ids given prefix ids, one ``lm.token_logprobs`` call
  (the same prefix-tree pass as ``lm.score``), for ``echo``/``logprobs``.

Character offsets come from decoding each token on its own (exact for byte-level BPE on whole
characters), falling back to decoding prefixes; a token's text is always the slice between its offset
and the next, so ``text_offset`` and ``tokens`` agree with the text returned.
"""

from __future__ import annotations

import functools
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from popsim.exceptions import LMInputError
from popsim.lm.base import LanguageModel, Prompt

__all__ = ["Engine", "GenerateJob", "ScoreJob", "TokenRow"]


@dataclass(frozen=True)
class GenerateJob:
    prompt: Prompt
    temperature: float
    seed: int


@dataclass(frozen=True)
class ScoreJob:
    prefix_ids: tuple[int, ...]
    target_ids: tuple[int, ...]
    temperature: float
    top_k: int


@dataclass(frozen=True)
class TokenRow:
    """Scored tokens: logprob per target token and top-k alternatives as (token text, logprob)."""

    logprobs: list[float]
    top: list[list[tuple[str, float]]]


class Engine:
    """Tokenisation and batched calls for one served LanguageModel."""

    def __init__(self, lm: LanguageModel, *, cache_size: int = 4096) -> None:
        self.lm = lm
        self.tokenizer = lm.tokenizer
        # echo scoring needs token logprobs and a tokenizer (for the tokens' character offsets)
        self.can_score = self.tokenizer is not None and lm.supports_token_logprobs
        # a prompt is usually sent once per option: tokenise it once (bounded memory)
        self._prompt_tokens = functools.lru_cache(maxsize=cache_size)(self._encode_with_offsets)

    # ------------------------------------------------------------------ tokens
    def prompt_tokens(self, text: str) -> tuple[list[int], list[int]]:
        """Ids exactly as the backend encodes a prompt, and each token's character offset in ``text``."""
        ids, offsets = self._prompt_tokens(text)
        return list(ids), list(offsets)

    def count_prompt_tokens(self, text: str) -> int:
        return len(self.lm.encode_prompt(text)) if self.tokenizer is not None else 0

    def _encode_with_offsets(self, text: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
        ids = list(self.lm.encode_prompt(text))
        return tuple(ids), tuple(self.offsets(ids, text))

    def continuation_tokens(self, text: str) -> tuple[list[int], list[int]]:
        """Ids exactly as the backend encodes a continuation (tokenised apart from its prompt), with offsets."""
        ids = list(self.lm.encode_continuation(text))
        return ids, self.offsets(ids, text)

    def offsets(self, ids: Sequence[int], text: str) -> list[int]:
        tok = self.tokenizer
        pieces = tok.batch_decode([[i] for i in ids], clean_up_tokenization_spaces=False)
        if "".join(pieces) != text:
            special = set(tok.all_special_ids)
            pieces = ["" if i in special else p for i, p in zip(ids, pieces, strict=True)]
        if "".join(pieces) == text:
            out, pos = [], 0
            for piece in pieces:
                out.append(pos)
                pos += len(piece)
            return out
        out, last = [], 0  # characters split across tokens: decode prefixes (slower, rare)
        for k in range(len(ids)):
            pos = len(tok.decode(list(ids[:k]), skip_special_tokens=True, clean_up_tokenization_spaces=False))
            last = max(last, min(pos, len(text)))
            out.append(last)
        return out

    def token_text(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id], clean_up_tokenization_spaces=False)

    # ------------------------------------------------------------------ batched work (worker thread)
    def run_batch(self, key: Hashable, jobs: list) -> list:
        """``MicroBatcher`` callback: key ``("generate", max_tokens, stop)`` or ``("score",)``."""
        if key[0] == "generate":
            _, max_tokens, stop = key
            return self.lm.generate([j.prompt for j in jobs], max_new_tokens=max_tokens,
                                    temperature=[j.temperature for j in jobs], seed=[j.seed for j in jobs],
                                    stop=stop)
        if key[0] == "score":
            return self._score(jobs)
        raise LMInputError(f"unknown work kind {key[0]!r}")

    def _score(self, jobs: list[ScoreJob]) -> list[TokenRow]:
        top_k = max(j.top_k for j in jobs)
        rows = self.lm.token_logprobs(
            [list(j.prefix_ids) for j in jobs], [list(j.target_ids) for j in jobs],
            temperature=[j.temperature for j in jobs], top_k=top_k,
        )
        out = []
        for job, (chosen, top_ids, top_lp) in zip(jobs, rows, strict=True):
            tops = []
            if job.top_k > 0:
                for ids_t, lps_t in zip(top_ids[:, : job.top_k].tolist(), top_lp[:, : job.top_k].tolist(),
                                        strict=True):
                    tops.append([(self.token_text(i), float(v)) for i, v in zip(ids_t, lps_t, strict=True)])
            out.append(TokenRow([float(v) for v in chosen.tolist()], tops))
        return out
