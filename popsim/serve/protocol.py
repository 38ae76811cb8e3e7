"""Request schemas of ``popsim serve`` (OpenAI legacy completions and chat, plus popsim's extensions).

Validation happens here, once, with limits from :class:`ServeLimits`; every violation becomes a 4xx
JSON error naming the field. Unknown OpenAI parameters (``top_p``, ``user``, ...) are accepted and
ignored, as vLLM does.

The ``popsim`` extension object (per prompt, lists as long as ``prompt``):

* ``seeds`` / ``temperatures`` - one sampling seed and temperature per prompt (a request's scalar
  ``seed`` is otherwise expanded with :func:`~popsim.lm.base.row_seeds`, as in-process generation does);
* ``continuation_start`` - for ``echo`` scoring, where the continuation starts in each prompt: prompt and
  continuation are then tokenised apart and only the continuation is scored, exactly as
  ``LanguageModel.score`` does, at ``temperatures`` (logits / tau).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["ServeLimits", "PopsimExtension", "CompletionRequest", "ChatMessage", "ChatRequest", "RenderRequest"]


@dataclass(frozen=True)
class ServeLimits:
    """Per-request and server-wide limits (bounded memory and latency under abuse)."""

    max_body_bytes: int = 4 * 1024 * 1024
    max_prompts: int = 256
    max_tokens: int = 1024
    max_prompt_tokens: int = 8192
    max_top_logprobs: int = 20
    max_concurrency: int = 256


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class PopsimExtension(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seeds: list[int] | None = None
    temperatures: list[float] | None = None
    continuation_start: list[int] | None = None

    @model_validator(mode="after")
    def _check(self) -> PopsimExtension:
        if self.temperatures is not None and any(not (0.0 <= t <= 100.0) for t in self.temperatures):
            raise ValueError("popsim.temperatures must be between 0 and 100")
        if self.continuation_start is not None and any(c < 0 for c in self.continuation_start):
            raise ValueError("popsim.continuation_start must be >= 0")
        if self.seeds is not None and any(not (0 <= s < 2**63) for s in self.seeds):
            raise ValueError("popsim.seeds must be between 0 and 2**63 - 1")
        return self

    def check_lengths(self, n: int) -> None:
        for name in ("seeds", "temperatures", "continuation_start"):
            values = getattr(self, name)
            if values is not None and len(values) != n:
                raise ValueError(f"popsim.{name} has {len(values)} values for {n} prompts; pass one per prompt")


class CompletionRequest(_Lenient):
    model: str | None = None
    prompt: str | list[str]
    max_tokens: int = Field(16, ge=0)
    temperature: float = Field(1.0, ge=0.0, le=100.0)
    seed: int | None = Field(None, ge=0, lt=2**63)
    logprobs: int | None = Field(None, ge=0)
    echo: bool = False
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1, le=1, description="one choice per prompt")
    stream: Literal[False] = False
    popsim: PopsimExtension | None = None

    @property
    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    @property
    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def check(self, limits: ServeLimits) -> None:
        """Limits and cross-field rules; raises ValueError with the field's name."""
        n = len(self.prompts)
        if n == 0:
            raise ValueError("prompt is an empty list; pass at least one prompt")
        if n > limits.max_prompts:
            raise ValueError(f"prompt has {n} prompts; at most {limits.max_prompts} per request")
        if self.max_tokens > limits.max_tokens:
            raise ValueError(f"max_tokens must be <= {limits.max_tokens}; got {self.max_tokens}")
        if self.logprobs is not None and self.logprobs > limits.max_top_logprobs:
            raise ValueError(f"logprobs must be <= {limits.max_top_logprobs}; got {self.logprobs}")
        if self.max_tokens == 0 and not self.echo:
            raise ValueError("max_tokens is 0 without echo; nothing to return")
        if len(self.stops) > 4 or any(not s for s in self.stops):
            raise ValueError("stop takes at most 4 non-empty strings")
        ext = self.popsim
        if ext is not None:
            ext.check_lengths(n)
            if ext.continuation_start is not None:
                if not self.echo or self.max_tokens != 0:
                    raise ValueError("popsim.continuation_start needs echo=true and max_tokens=0 (scoring)")
                for p, c in zip(self.prompts, ext.continuation_start, strict=True):
                    if c > len(p):
                        raise ValueError(f"popsim.continuation_start {c} is past the end of a {len(p)}-char prompt")


class ChatMessage(_Lenient):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(_Lenient):
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=100.0)
    seed: int | None = Field(None, ge=0, lt=2**63)
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1, le=1, description="one choice")
    stream: Literal[False] = False
    add_generation_prompt: bool = True
    continue_final_message: bool = False

    @property
    def new_tokens(self) -> int:
        return self.max_completion_tokens or self.max_tokens or 256

    @property
    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def check(self, limits: ServeLimits) -> None:
        if self.new_tokens > limits.max_tokens:
            raise ValueError(f"max_tokens must be <= {limits.max_tokens}; got {self.new_tokens}")
        if self.continue_final_message and self.messages[-1].role != "assistant":
            raise ValueError("continue_final_message needs the last message to be the assistant's")
        if self.continue_final_message and self.add_generation_prompt:
            raise ValueError("continue_final_message needs add_generation_prompt=false")
        if len(self.stops) > 4 or any(not s for s in self.stops):
            raise ValueError("stop takes at most 4 non-empty strings")


class RenderChat(_Lenient):
    messages: list[ChatMessage] = Field(min_length=1)
    assistant_prefix: str = ""


class RenderRequest(_Lenient):
    """popsim extension: render chats with the served model's template (the client's ``render``)."""

    model: str | None = None
    chats: list[RenderChat] = Field(min_length=1)
