"""The one language-model interface every popsim layer talks to.

Three batch-first calls, after Concordia's two-method LM and vLLM's ``LLM``:

* :meth:`LanguageModel.generate` - sample continuations (per-row temperature and seed);
* :meth:`LanguageModel.score` - log-likelihood of continuations given prompts, temperature-scaled and
  differentiable with respect to the temperature (the MoP trainer learns one per persona);
* :meth:`LanguageModel.option_logprobs` - normalised log-probabilities of multiple-choice options.

Outputs keep input order and mismatched lengths raise :class:`~popsim.exceptions.LMInputError`.
Results are independent of batch make-up exactly in fp32 (within 1e-4); in bf16 (the CPU default where
native) padding and batch shape move a score by up to ~0.03 nats per token and can flip a sampled token,
so pick ``dtype: fp32`` where bit-level reproducibility across batch sizes matters.
Prompts are either plain text (sent verbatim) or a :class:`Chat` that the backend renders with the
model's chat template.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from popsim.exceptions import LMInputError

__all__ = [
    "Chat", "Prompt", "LanguageModel", "as_row_values", "check_batch", "row_seeds", "generation_rows",
    "render_with_tokenizer",
]


@dataclass(frozen=True)
class Chat:
    """A conversation to render with the model's chat template; the assistant turn is left open.

    ``assistant_prefix`` is text the assistant's answer starts with (it is part of the prompt, so a
    score or generation continues right after it).
    """

    messages: tuple[tuple[str, str], ...]
    assistant_prefix: str = ""

    def __post_init__(self) -> None:
        for role, content in self.messages:
            if role not in {"system", "user", "assistant"}:
                raise LMInputError(f"Chat role must be system, user or assistant; got {role!r}")
            if not isinstance(content, str):
                raise LMInputError(f"Chat content must be text; got {type(content).__name__}")

    @classmethod
    def of(cls, user: str, *, system: str | None = None, assistant_prefix: str = "") -> Chat:
        """Build a single-turn chat: optional system message, one user message."""
        messages = ((("system", system),) if system else ()) + (("user", user),)
        return cls(messages=messages, assistant_prefix=assistant_prefix)

    def plain_text(self) -> str:
        """A template-free rendering, for models without a chat template."""
        lines = [f"{role.capitalize()}: {content}" for role, content in self.messages]
        return "\n\n".join(lines) + "\n\nAssistant:" + (
            " " + self.assistant_prefix if self.assistant_prefix else ""
        )


Prompt = str | Chat


def check_batch(name: str, items: Sequence, *, expected: int | None = None) -> None:
    """Raise a one-line LMInputError for an empty batch or a length mismatch."""
    if isinstance(items, (str, Chat)):
        raise LMInputError(f"`{name}` must be a list of prompts, not a single {type(items).__name__}")
    if len(items) == 0:
        raise LMInputError(f"`{name}` is empty; pass at least one item")
    if expected is not None and len(items) != expected:
        raise LMInputError(
            f"`{name}` has {len(items)} items but the prompts have {expected}; pass one per prompt"
        )


def as_row_values(
    value: float | Sequence[float] | torch.Tensor, n: int, *, name: str = "temperature"
) -> torch.Tensor:
    """Broadcast a scalar or per-row value to a float tensor of length ``n`` (keeps autograd)."""
    if isinstance(value, torch.Tensor):
        t = value.reshape(-1) if value.dim() else value.reshape(1)
        if t.numel() == 1:
            t = t.expand(n)
    else:
        t = torch.as_tensor(np.broadcast_to(np.asarray(value, dtype=np.float64), (n,)).copy())
    if t.numel() != n:
        raise LMInputError(f"`{name}` has {t.numel()} values but there are {n} rows; pass one or {n}")
    if bool((t.detach() < 0).any()) or not bool(torch.isfinite(t.detach()).all()):
        raise LMInputError(f"`{name}` must be finite and >= 0; got {t.detach().tolist()[:5]}")
    return t


def row_seeds(seed: int | Sequence[int], n: int) -> list[int]:
    """Per-row seeds: a list is used as given; an int spawns one independent seed per row.

    Every backend (and the HTTP server, which receives one seed per request) expands seeds this way,
    so a row's sample is the same in-process and through ``popsim serve``.
    """
    if isinstance(seed, (int, np.integer)):
        children = np.random.SeedSequence(int(seed)).generate_state(n, dtype=np.uint32)
        return [int(c) for c in children]
    seeds = [int(s) for s in seed]
    if len(seeds) != n:
        raise LMInputError(f"`seed` has {len(seeds)} values but there are {n} prompts; pass one or {n}")
    return seeds


def generation_rows(
    prompts: Sequence, max_new_tokens: int, temperature: float | Sequence[float] | torch.Tensor, seed
) -> tuple[list[float], list[int]]:
    """Check a ``generate`` call and expand its temperature and seed to one value per row.

    Shared by every backend so a row is sampled with the same temperature and seed in-process, through
    ``popsim serve`` and on vLLM.
    """
    check_batch("prompts", prompts)
    if max_new_tokens < 1:
        raise LMInputError(f"`max_new_tokens` must be >= 1; got {max_new_tokens}")
    n = len(prompts)
    return as_row_values(temperature, n).detach().double().tolist(), row_seeds(seed, n)


def render_with_tokenizer(tokenizer, prompt: Prompt) -> str:
    """Prompt text as a transformers tokenizer's chat template renders it (assistant turn left open)."""
    if isinstance(prompt, str):
        return prompt
    if not isinstance(prompt, Chat):
        raise LMInputError(f"a prompt must be str or Chat; got {type(prompt).__name__}")
    if not getattr(tokenizer, "chat_template", None):
        return prompt.plain_text()
    messages = [{"role": r, "content": c} for r, c in prompt.messages]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) + prompt.assistant_prefix


class LanguageModel(ABC):
    """Abstract batch-first language model. Subclasses implement the three calls and ``render``.

    ``name`` identifies the weights (it keys caches and is recorded in manifests).
    """

    name: str = "lm"

    @abstractmethod
    def render(self, prompt: Prompt) -> str:
        """The exact text the model conditions on for ``prompt``."""

    @abstractmethod
    def generate(
        self,
        prompts: Sequence[Prompt],
        *,
        max_new_tokens: int = 64,
        temperature: float | Sequence[float] = 1.0,
        seed: int | Sequence[int] = 0,
        stop: Sequence[str] = (),
    ) -> list[str]:
        """Sample one continuation per prompt.

        ``temperature`` and ``seed`` are scalars or one per row; temperature 0 is greedy. A row's text
        depends only on its prompt, temperature and seed, not on the rest of the batch.
        """

    @abstractmethod
    def score(
        self,
        prompts: Sequence[Prompt],
        continuations: Sequence[str],
        *,
        temperature: float | Sequence[float] | torch.Tensor = 1.0,
    ) -> torch.Tensor:
        """Sum of log p(continuation tokens | prompt) with logits divided by ``temperature``.

        Returns a float tensor of shape ``(len(prompts),)``; when ``temperature`` is a tensor that
        requires grad, the result is differentiable with respect to it.
        """

    def option_logprobs(
        self,
        prompts: Sequence[Prompt],
        options: Sequence[Sequence[str]],
        *,
        temperature: float | Sequence[float] = 1.0,
    ) -> list[np.ndarray]:
        """Log-probabilities of each prompt's options, normalised over that prompt's options.

        The default flattens into one :meth:`score` call; backends override it to share the prompt's
        computation across its options.
        """
        check_batch("prompts", prompts)
        check_batch("options", options, expected=len(prompts))
        temps = as_row_values(temperature, len(prompts))
        flat_prompts, flat_conts, flat_temps = [], [], []
        for prompt, opts, t in zip(prompts, options, temps.tolist(), strict=True):
            if len(opts) == 0:
                raise LMInputError("each prompt needs at least one option; got an empty option list")
            flat_prompts += [prompt] * len(opts)
            flat_conts += list(opts)
            flat_temps += [t] * len(opts)
        scores = self.score(flat_prompts, flat_conts, temperature=flat_temps).detach().double().numpy()
        return split_and_normalise(scores, [len(o) for o in options])


def split_and_normalise(flat_scores: np.ndarray, sizes: Sequence[int]) -> list[np.ndarray]:
    """Split flat per-option log-likelihoods into groups and log-normalise each group."""
    out, start = [], 0
    for size in sizes:
        group = np.asarray(flat_scores[start : start + size], dtype=np.float64)
        out.append(group - np.logaddexp.reduce(group))
        start += size
    return out
