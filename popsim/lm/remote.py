"""Turning servers' per-token logprobs into popsim scores (shared by the openai and vllm backends).

Servers return log-probabilities per token, not logits, and at most the top-k alternatives. Two helpers:

* :func:`continuation_logprob` - sum the tokens of an echoed ``prompt + continuation`` that belong to
  the continuation, located by ``text_offset`` (OpenAI legacy completions format);
* :func:`tempered_logprob` - ``log p_tau(token)`` from temperature-1 logprobs of the top-k: exact at
  ``tau = 1``, approximate otherwise (the unseen tail is spread at the smallest top-k probability; for
  ``tau < 1`` that over-counts the tail, so the result errs low, and with k >= 5 the error is small).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from popsim.exceptions import BackendError

__all__ = ["continuation_logprob", "tempered_logprob"]


def tempered_logprob(target: float, alternatives: Sequence[float], temperature: float) -> float:
    """``log p_tau`` of a token whose temperature-1 logprob is ``target``, given the top-k logprobs.

    ``alternatives`` are the other known tokens' logprobs (the target excluded). With logprobs
    ``l_v = z_v - logZ``, ``log p_tau(y) = l_y / tau - logsumexp_v(l_v / tau)``; tokens outside the
    known set are approximated as ``tail / p_min`` tokens of probability ``p_min``.
    """
    if abs(temperature - 1.0) < 1e-6:
        return target
    tau = max(temperature, 1e-4)
    known = [target, *alternatives]
    tail = max(0.0, 1.0 - sum(math.exp(v) for v in known))
    terms = [v / tau for v in known]
    p_min = math.exp(min(known))
    if tail > 1e-9 and p_min > 0:
        terms.append(math.log(tail / p_min) + min(known) / tau)
    peak = max(terms)
    return target / tau - (peak + math.log(sum(math.exp(t - peak) for t in terms)))


def continuation_logprob(
    logprobs: Mapping,
    *,
    prompt_len: int,
    full_text: str,
    temperature: float = 1.0,
) -> float:
    """Sum of the logprobs of the continuation's tokens in an echoed ``prompt + continuation``.

    A token belongs to the continuation when it ends after ``prompt_len`` characters (so a token that
    straddles the boundary counts with the continuation it helps spell). Offsets are realigned on the
    end of the text, because some servers count characters for special tokens they prepend (a decoded BOS).
    """
    tokens = logprobs.get("tokens") or []
    values = logprobs.get("token_logprobs") or []
    offsets = logprobs.get("text_offset") or []
    tops = logprobs.get("top_logprobs") or [None] * len(tokens)
    if not tokens or len(values) != len(tokens) or len(offsets) != len(tokens):
        raise BackendError("the server's logprobs have no tokens/token_logprobs/text_offset; it cannot score")
    shift = offsets[-1] + len(tokens[-1]) - len(full_text)
    boundary = prompt_len + shift
    ends = [*offsets[1:], offsets[-1] + len(tokens[-1])]
    total = 0.0
    counted = 0
    for token, value, end, top in zip(tokens, values, ends, tops, strict=True):
        if end <= boundary:
            continue
        if value is None:
            raise BackendError("the server returned no logprob for the continuation's first token; "
                               "the prompt is probably empty")
        others = [v for t, v in (top or {}).items() if t != token]
        total += tempered_logprob(float(value), [float(v) for v in others], temperature)
        counted += 1
    if counted == 0 and len(full_text) > prompt_len:
        raise BackendError("the server's tokens end before the continuation; check it echoes the prompt")
    return total
