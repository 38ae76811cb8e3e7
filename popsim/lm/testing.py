"""Test doubles that ship with popsim (after Concordia): fast, deterministic, and honest about temperature.

* :class:`HashLM` - a pseudo-LM whose token logits come from a hash of the text so far: scores are
  stable, non-uniform, temperature-scaled and differentiable; generation is deterministic in
  (prompt, seed, temperature). It also produces exact logit sketches, so the MoP trainer runs on it.
* :class:`CountingLM` - wraps any LanguageModel and records every call (for "how many backend calls did
  a population step make" tests); same interface.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from popsim.lm.base import Chat, LanguageModel, Prompt, as_row_values, check_batch, generation_rows
from popsim.lm.sketch import LogitSketch

__all__ = ["HashLM", "CountingLM", "CallRecord"]

_VOCAB = 16
_WORDS = ("good", "bad", "plot", "acting", "great", "boring", "the", "film", "was", "really", "fun", "slow")


def _hash_logits(context: str) -> np.ndarray:
    digest = hashlib.sha256(context.encode()).digest()
    return (np.frombuffer(digest[:_VOCAB], dtype=np.uint8).astype(np.float64) / 255.0) * 6.0 - 3.0


class HashLM(LanguageModel):
    """Deterministic pseudo-LM over a 16-symbol alphabet (character code mod 16).

    ``script`` (optional) fixes what :meth:`generate` returns, cycling through it. An int ``seed`` is
    shared by every row (as it always was here: tests' expected texts depend on it).
    """

    backend = "hash-lm"
    supports_sketches = True

    def __init__(self, name: str = "hash-lm", *, script: Sequence[str] | None = None) -> None:
        self.name = name
        self.script = list(script) if script else None
        self._script_pos = 0

    def render(self, prompt: Prompt) -> str:
        """Chats as generic turns: the double stands for a chat model (a base model's page is not used)."""
        return prompt.turns_text() if isinstance(prompt, Chat) else prompt

    def _token_logits(self, prompt: str, continuation: str) -> tuple[np.ndarray, np.ndarray]:
        logits = np.stack([_hash_logits(prompt + continuation[:t]) for t in range(len(continuation))])
        targets = np.array([ord(ch) % _VOCAB for ch in continuation], dtype=np.int64)
        return logits.reshape(-1, _VOCAB), targets

    def score(self, prompts, continuations, *, temperature=1.0) -> torch.Tensor:
        check_batch("prompts", prompts)
        check_batch("continuations", continuations, expected=len(prompts))
        temps = as_row_values(temperature, len(prompts))
        out = []
        for i, (p, c) in enumerate(zip(prompts, continuations, strict=True)):
            logits, targets = self._token_logits(self.render(p), c)
            z = torch.from_numpy(logits).float() / temps[i].float().clamp_min(1e-4)
            lp = z.log_softmax(1).gather(1, torch.from_numpy(targets).view(-1, 1)).sum()
            out.append(lp)
        result = torch.stack(out)
        return result if temps.requires_grad else result.detach()

    def score_sketches(self, prompts, continuations) -> list[LogitSketch]:
        """Exact sketches (the alphabet is small enough to keep every logit)."""
        check_batch("prompts", prompts)
        check_batch("continuations", continuations, expected=len(prompts))
        out = []
        for p, c in zip(prompts, continuations, strict=True):
            logits, targets = self._token_logits(self.render(p), c)
            target = logits[np.arange(len(targets)), targets] if len(targets) else np.zeros(0)
            empty = np.zeros((len(targets), 1))
            out.append(LogitSketch(target, logits, empty, empty, empty))
        return out

    def generate(self, prompts, *, max_new_tokens=64, temperature=1.0, seed=0, stop=()) -> list[str]:
        temps, _ = generation_rows(prompts, max_new_tokens, temperature, seed)  # checks lengths and values
        seeds = [seed] * len(prompts) if isinstance(seed, int) else list(seed)
        out = []
        for p, t, s in zip(prompts, temps, seeds, strict=True):
            if self.script:
                out.append(self.script[self._script_pos % len(self.script)])
                self._script_pos += 1
                continue
            rng = np.random.default_rng(int.from_bytes(hashlib.sha256(
                f"{self.render(p)}|{s}|{t:.6f}".encode()).digest()[:8], "little"))
            n_words = max(1, min(max_new_tokens // 2, 12))
            out.append(" ".join(rng.choice(_WORDS, size=n_words)))
        return out


@dataclass
class CallRecord:
    method: str
    batch_size: int


@dataclass
class CountingLM(LanguageModel):
    """Wraps a LanguageModel and records each call's method and batch size; it reports the inner
    model's name, identity, tokenizer and capabilities as its own."""

    inner: LanguageModel
    calls: list[CallRecord] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.name = self.inner.name

    @property
    def identity(self) -> str:  # type: ignore[override]
        return self.inner.identity

    @property
    def backend(self) -> str:  # type: ignore[override]
        return self.inner.backend

    @property
    def supports_sketches(self) -> bool:  # type: ignore[override]
        return self.inner.supports_sketches

    @property
    def supports_token_logprobs(self) -> bool:  # type: ignore[override]
        return self.inner.supports_token_logprobs

    @property
    def tokenizer(self):  # type: ignore[override]
        return self.inner.tokenizer

    def render(self, prompt: Prompt) -> str:
        return self.inner.render(prompt)

    def count(self, method: str | None = None) -> int:
        return sum(1 for c in self.calls if method is None or c.method == method)

    def generate(self, prompts, **kwargs) -> list[str]:
        self.calls.append(CallRecord("generate", len(prompts)))
        return self.inner.generate(prompts, **kwargs)

    def score(self, prompts, continuations, **kwargs) -> torch.Tensor:
        self.calls.append(CallRecord("score", len(prompts)))
        return self.inner.score(prompts, continuations, **kwargs)

    def option_logprobs(self, prompts, options, **kwargs) -> list[np.ndarray]:
        self.calls.append(CallRecord("option_logprobs", len(prompts)))
        return self.inner.option_logprobs(prompts, options, **kwargs)

    def score_sketches(self, prompts, continuations) -> list[LogitSketch]:
        self.calls.append(CallRecord("score_sketches", len(prompts)))
        return self.inner.score_sketches(prompts, continuations)

    def token_logprobs(self, prompt_ids, target_ids, **kwargs) -> list:
        self.calls.append(CallRecord("token_logprobs", len(prompt_ids)))
        return self.inner.token_logprobs(prompt_ids, target_ids, **kwargs)
