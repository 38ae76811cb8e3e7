"""The one language-model interface every popsim layer talks to.

Three batch-first calls, after Concordia's two-method LM and vLLM's ``LLM``:

* :meth:`LanguageModel.generate` - sample continuations (per-row temperature and seed);
* :meth:`LanguageModel.score` - log-likelihood of continuations given prompts, temperature-scaled and
  differentiable with respect to the temperature (the MoP trainer learns one per persona);
* :meth:`LanguageModel.option_logprobs` - normalised log-probabilities of multiple-choice options.

Two optional calls, declared here so no caller probes with ``hasattr``; a backend that has one sets its
``supports_*`` flag, and one that lacks it raises a :class:`~popsim.exceptions.CapabilityError` that names
the backend and the fix (:meth:`LanguageModel.require` raises the same error up front):

* :meth:`LanguageModel.score_sketches` - per-token logit sketches, from which MoP's trainer learns
  temperatures without rerunning the LM (transformers and the test doubles);
* :meth:`LanguageModel.token_logprobs` - per-token logprobs of token ids, behind ``popsim serve``'s
  echo scoring (transformers).

``identity`` names what the scores depend on (weights' content, dtype, ...) and keys the score cache.

Outputs keep input order and mismatched lengths raise :class:`~popsim.exceptions.LMInputError`.
Results are independent of batch make-up exactly in fp32 (within 1e-4); in bf16 (the CPU default where
native) padding and batch shape move a score by up to ~0.03 nats per token and can flip a sampled token,
so pick ``dtype: fp32`` where bit-level reproducibility across batch sizes matters.
Prompts are either plain text (sent verbatim) or a :class:`Chat` that the backend renders with the
model's chat template. A model without one (a base model such as Gemma 3 270M) gets
:meth:`Chat.plain_text`: the prompt builder's own document-style rendering where it gave one, else
"User: ... / Assistant:" turns; generating from it stops at the first blank line (:data:`PLAIN_TURN_END`),
since a base model writes on into the next section instead of ending its turn.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from popsim.exceptions import CapabilityError, LMInputError
from popsim.lm.sketch import LogitSketch

__all__ = [
    "Chat", "Prompt", "LanguageModel", "as_row_values", "check_batch", "row_seeds", "generation_rows",
    "render_with_tokenizer", "PLAIN_TURN_END", "plain_stops",
]

#: where a template-free Chat's answer ends when generating: the blank line before the next turn or section
PLAIN_TURN_END = "\n\n"


@dataclass(frozen=True)
class Chat:
    """A conversation to render with the model's chat template; the assistant turn is left open.

    ``assistant_prefix`` is text the assistant's answer starts with (it is part of the prompt, so a
    score or generation continues right after it). ``plain`` is the text a model without a chat template
    gets instead of the generic turns (e.g. a review prompt as a page of reviews for a base model to
    continue); the prompt builder writes both renderings from the same parts.
    """

    messages: tuple[tuple[str, str], ...]
    assistant_prefix: str = ""
    plain: str = ""

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
        """A template-free rendering, for models without a chat template: ``plain`` where given, else
        :meth:`turns_text`."""
        return self.plain or self.turns_text()

    def turns_text(self) -> str:
        """"Role: content" turns ending in an open "Assistant:" turn (a generic stand-in for a template)."""
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
        values = np.asarray(value, dtype=np.float64).reshape(-1)
        if values.size not in (1, n):
            raise LMInputError(f"`{name}` has {values.size} values but there are {n} rows; pass one or {n}")
        t = torch.as_tensor(np.broadcast_to(values, (n,)).copy())
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


def plain_stops(tokenizer, prompt: Prompt, stop: Sequence[str]) -> tuple[str, ...]:
    """A row's stop strings: ``stop``, plus :data:`PLAIN_TURN_END` for a Chat that ``tokenizer`` renders
    without a chat template (there is no end-of-turn token for the model to emit)."""
    if isinstance(prompt, Chat) and not getattr(tokenizer, "chat_template", None):
        return (*stop, PLAIN_TURN_END)
    return tuple(stop)


_FIT_ELSEWHERE = ("fit MoP with a local transformers model (e.g. lm: smollm2-135m-instruct) and simulate with "
                  "this backend")
# call -> (flag that says the backend has it, what it returns, what the user can do instead)
_OPTIONAL_CALLS = {
    "score_sketches": ("supports_sketches", "logit sketches, which fitting MoP needs", _FIT_ELSEWHERE),
    "token_logprobs": ("supports_token_logprobs", "per-token logprobs of token ids, which echo scoring needs",
                       "serve a local transformers model instead (e.g. `popsim serve --lm smollm2-135m-instruct`)"),
}


class LanguageModel(ABC):
    """Abstract batch-first language model. Subclasses implement the three calls and ``render``.

    ``name`` is the user-facing model name (recorded in manifests, served as the model id);
    ``identity`` says what the scores depend on and keys caches; ``backend`` names the backend in errors.
    """

    name: str = "lm"
    backend: str = "lm"
    #: whether :meth:`score_sketches` works (else it raises CapabilityError)
    supports_sketches: bool = False
    #: whether :meth:`token_logprobs` works (else it raises CapabilityError)
    supports_token_logprobs: bool = False
    #: a transformers tokenizer where the backend has one (``popsim serve`` needs it for token offsets)
    tokenizer: Any = None

    @property
    def identity(self) -> str:
        """What this model's scores depend on; two models with equal identities score alike.

        Keys the machine-wide score cache, so backends with weights include the weights' digest and the
        dtype (see :mod:`popsim.lm.identity`); the default, for weightless doubles, is backend and name.
        """
        return f"{self.backend}:{self.name}"

    def require(self, call: str) -> None:
        """Raise the CapabilityError :meth:`score_sketches` or :meth:`token_logprobs` would, before any work."""
        flag, what, fix = _OPTIONAL_CALLS[call]
        if not getattr(self, flag):
            raise CapabilityError(f"the {self.backend} backend (model '{self.name}') cannot return {what}; {fix}")

    def score_sketches(self, prompts: Sequence[Prompt], continuations: Sequence[str]) -> list[LogitSketch]:
        """Per-continuation :class:`~popsim.lm.sketch.LogitSketch` (target, top-k and tail-histogram logits
        per token), so log p at any temperature is recomputed without the LM. Only backends that see
        logits have it: it cannot be derived from :meth:`score`, which sums over tokens."""
        self.require("score_sketches")
        raise NotImplementedError(f"{type(self).__name__} sets supports_sketches but has no score_sketches")

    def token_logprobs(
        self,
        prompt_ids: Sequence[Sequence[int]],
        target_ids: Sequence[Sequence[int]],
        *,
        temperature: float | Sequence[float] = 1.0,
        top_k: int = 0,
    ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per row ``(logprobs (T,), top ids (T, k), top logprobs (T, k))`` of each target token given the
        ids before it, at ``temperature``; summing a row reproduces :meth:`score` for the same ids."""
        self.require("token_logprobs")
        raise NotImplementedError(f"{type(self).__name__} sets supports_token_logprobs but has no token_logprobs")

    def _tokenizer_or_raise(self) -> Any:
        if self.tokenizer is None:
            raise CapabilityError(f"the {self.backend} backend (model '{self.name}') has no tokenizer, so it "
                                  "cannot encode text to token ids; use a transformers or vllm model")
        return self.tokenizer

    def encode_prompt(self, prompt: Prompt) -> list[int]:
        """Token ids of a rendered prompt (BOS added only if the text does not carry it already; an empty
        prompt becomes one BOS, or pad, token so there is a position to predict from)."""
        tok = self._tokenizer_or_raise()
        text = self.render(prompt)
        bos = tok.bos_token
        ids = list(tok(text, add_special_tokens=not (bos and text.startswith(bos)))["input_ids"])
        if not ids:
            fallback = [i for i in (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id) if i is not None]
            ids = [fallback[0] if fallback else 0]
        return ids

    def encode_continuation(self, text: str) -> list[int]:
        """Continuation ids, tokenised apart from the prompt so the boundary is exact."""
        return list(self._tokenizer_or_raise()(text, add_special_tokens=False)["input_ids"])

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
