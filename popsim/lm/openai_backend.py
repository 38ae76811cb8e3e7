"""An OpenAI-compatible HTTP endpoint as a popsim LanguageModel (``popsim serve``, ``vllm serve``, ...).

Names: ``openai:<base_url>`` (the server's first model) or ``openai:<model>@<base_url>``, where the
base URL is the API root, e.g. ``openai:http://127.0.0.1:8000/v1``. The API key comes from
``OPENAI_API_KEY`` or ``POPSIM_API_KEY``.

* ``generate`` - ``/v1/completions``; each row carries its own seed (an int seed is expanded with
  :func:`~popsim.lm.base.row_seeds`, as in-process backends do), so text equals in-process generation;
* ``score`` - legacy ``echo`` + ``logprobs`` with ``max_tokens=0``: the server returns the logprobs of
  ``prompt + continuation`` and the continuation's tokens are summed by ``text_offset``. Against a popsim
  server the request also says where the continuation starts and the temperature (the ``popsim``
  extension field), so tokenisation and temperature scaling are exactly the in-process ones. A generic
  server scores at temperature 1 only; other temperatures are approximated from the top-k logprobs
  (:func:`~popsim.lm.remote.tempered_logprob`, with a one-time warning);
* ``option_logprobs`` - derived from ``score``.

Scores are not differentiable over HTTP, so MoP is fitted with an open in-process model and the fitted
gate then samples through this backend. Requests go out concurrently (bounded), with timeouts and
retries with exponential backoff on connection errors, 429 and 5xx.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import torch

from popsim.exceptions import (
    AuthenticationError,
    BackendError,
    CapabilityError,
    EndpointUnreachableError,
    EndpointURLError,
    LMInputError,
)
from popsim.lm.base import (
    Chat,
    LanguageModel,
    Prompt,
    as_row_values,
    check_batch,
    generation_rows,
)
from popsim.lm.remote import continuation_logprob

__all__ = ["OpenAILanguageModel", "parse_openai_name"]

_RETRY_STATUS = {429, 500, 502, 503, 504}
_NO_LOGPROBS = ("MoP can still sample free-text generation through this endpoint with a gate fitted on an "
                "open model (e.g. smollm2-135m-instruct)")


def parse_openai_name(name: str) -> tuple[str | None, str]:
    """``openai:[MODEL@]URL`` -> (model or None, base URL without a trailing slash); raises on a bad URL."""
    spec = name.removeprefix("openai:")
    model: str | None = None
    if "@" in spec and "://" not in spec.split("@", 1)[0]:
        model, spec = spec.split("@", 1)
    url = spec.rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname or " " in url:
        raise EndpointURLError(
            f"lm '{name}' has no valid endpoint URL; use openai:http://HOST:PORT/v1 or openai:MODEL@http://HOST:PORT/v1"
        )
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise EndpointURLError(f"lm '{name}' has a bad port in its URL; use e.g. http://127.0.0.1:8000/v1") from None
    return model or None, url


class OpenAILanguageModel(LanguageModel):
    """popsim's LanguageModel over an OpenAI-compatible ``/v1`` API (no logit sketches or token-id logprobs:
    MoP is fitted on an in-process model; ``identity`` is the served model's own where a popsim server
    reports it, else the model id at the URL).

    Args:
        base_url: the API root, e.g. ``http://127.0.0.1:8000/v1``.
        model: model id to request; default the first one ``/v1/models`` lists.
        api_key: bearer key; default ``$OPENAI_API_KEY`` or ``$POPSIM_API_KEY``.
        max_concurrency: requests in flight at once.
        rows_per_request: prompts per request where the server takes a list.
        timeout: seconds per request.
        max_retries: retries on connection errors, 429 and 5xx (backoff 0.5 s, 1 s, 2 s, ... capped at 8 s).
        top_logprobs: alternatives requested per token from a generic server (temperature approximation).
    """

    backend = "openai"

    def __init__(
        self,
        base_url: str,
        *,
        model: str | None = None,
        api_key: str | None = None,
        max_concurrency: int = 8,
        rows_per_request: int = 64,
        timeout: float = 120.0,
        max_retries: int = 4,
        top_logprobs: int = 5,
    ) -> None:
        try:
            import httpx
        except ImportError:
            raise BackendError("the openai backend needs httpx; run `pip install 'popsim[serve]'`") from None
        _, self.base_url = parse_openai_name(base_url)
        if max_concurrency < 1 or rows_per_request < 1 or max_retries < 0 or timeout <= 0:
            raise LMInputError("max_concurrency and rows_per_request must be >= 1, max_retries >= 0, timeout > 0")
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY") or os.environ.get("POPSIM_API_KEY")
        self.max_concurrency = max_concurrency
        self.rows_per_request = rows_per_request
        self.max_retries = max_retries
        self.top_logprobs = top_logprobs
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self._httpx = httpx
        self._client = httpx.Client(
            headers=headers, timeout=httpx.Timeout(timeout, connect=min(10.0, timeout)),
            limits=httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency),
        )
        self._pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="popsim-http")
        self._renders: dict[Chat, str] = {}
        self._warned_tau = False
        card = self._model_card(model)
        self.model = str(card["id"])
        self.name = self.model
        self.is_popsim = card.get("owned_by") == "popsim" or "popsim" in card
        served = card.get("popsim") if isinstance(card.get("popsim"), dict) else {}
        self._identity = str(served.get("identity") or f"openai:{self.model}@{self.base_url}")

    @property
    def identity(self) -> str:
        return self._identity

    @classmethod
    def from_name(cls, name: str, **options: Any) -> OpenAILanguageModel:
        """Build from ``openai:[MODEL@]URL``; ``options`` are the constructor's keyword arguments."""
        model, url = parse_openai_name(name)
        return cls(url, model=model, **options)

    def close(self) -> None:
        """Close connections and the request pool."""
        self._pool.shutdown(wait=False)
        self._client.close()

    # ------------------------------------------------------------------ HTTP
    def _request(self, method: str, path: str, body: dict | None = None) -> dict:
        """One API call with retries; every failure becomes a one-line BackendError subclass."""
        httpx = self._httpx
        url = self.base_url + path
        last = ""
        retry_after = 0.0
        for attempt in range(self.max_retries + 1):
            if attempt:  # exponential backoff, or the server's Retry-After if longer (capped at 30 s)
                time.sleep(max(min(8.0, 0.5 * 2 ** (attempt - 1)), retry_after))
                retry_after = 0.0
            try:
                response = self._client.request(method, url, json=body)
            except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
                raise EndpointURLError(f"endpoint URL {url} is not usable: {exc}") from None
            except httpx.TransportError as exc:  # refused, reset, timed out, DNS
                last = f"{type(exc).__name__}: {str(exc)[:120] or 'no answer'}"
                continue
            if response.status_code in _RETRY_STATUS:
                last = f"HTTP {response.status_code} {_error_message(response)}"
                wait = response.headers.get("retry-after", "")
                retry_after = min(float(wait), 30.0) if wait.isdigit() else 0.0
                continue
            if response.status_code in {401, 403}:
                raise AuthenticationError(
                    f"{url} rejected the API key (HTTP {response.status_code}); set OPENAI_API_KEY or POPSIM_API_KEY "
                    "to the key the server was started with"
                )
            if response.status_code == 404:
                raise BackendError(f"{url}: HTTP 404 {_error_message(response)}; the URL should be the API root, "
                                   "e.g. http://127.0.0.1:8000/v1")
            if response.status_code >= 400:
                message = _error_message(response)
                if "logprob" in message.lower() or "echo" in message.lower():
                    raise CapabilityError(f"{self.base_url} cannot return prompt logprobs ({message}); {_NO_LOGPROBS}")
                raise BackendError(f"{url} rejected the request: HTTP {response.status_code} {message}")
            try:
                return response.json()
            except ValueError:
                raise BackendError(f"{url} answered with something other than JSON") from None
        if last.startswith("HTTP"):
            raise BackendError(f"{url} kept failing after {self.max_retries + 1} tries ({last}); check the server log")
        raise EndpointUnreachableError(
            f"cannot reach {url} after {self.max_retries + 1} tries ({last}); start the server "
            "(e.g. `python -m popsim serve`) and rerun - completed work is kept"
        )

    def _model_card(self, model: str | None) -> dict:
        listing = self._request("GET", "/models").get("data") or []
        if model is None:
            if not listing:
                raise BackendError(f"{self.base_url}/models lists no model; pass openai:MODEL@URL")
            return listing[0]
        for card in listing:
            if card.get("id") == model:
                return card
        known = ", ".join(str(c.get("id")) for c in listing) or "none"
        raise BackendError(f"{self.base_url} does not serve model '{model}' (it serves: {known})")

    def _map(self, fn: Callable[[Any], Any], jobs: Sequence[Any]) -> list[Any]:
        """Run jobs concurrently (bounded by the pool), results in job order; the first error propagates."""
        if len(jobs) == 1:
            return [fn(jobs[0])]
        return list(self._pool.map(fn, jobs))

    # ------------------------------------------------------------------ prompts
    def render(self, prompt: Prompt) -> str:
        """The server's rendering of a Chat (popsim servers; cached); a generic server's is unknown, so a
        template-free rendering stands in as a cache key and chats are generated via chat completions."""
        if isinstance(prompt, str):
            return prompt
        if not isinstance(prompt, Chat):
            raise LMInputError(f"a prompt must be str or Chat; got {type(prompt).__name__}")
        if not self.is_popsim:
            return prompt.plain_text()
        if prompt not in self._renders:
            self._render_many([prompt])
        return self._renders[prompt]

    def _render_many(self, prompts: Sequence[Prompt]) -> None:
        chats = list(dict.fromkeys(p for p in prompts if isinstance(p, Chat) and p not in self._renders))
        for start in range(0, len(chats), self.rows_per_request):
            batch = chats[start : start + self.rows_per_request]
            body = {"model": self.model, "chats": [
                {"messages": [{"role": r, "content": c} for r, c in chat.messages],
                 "assistant_prefix": chat.assistant_prefix} for chat in batch]}
            texts = self._request("POST", "/popsim/render", body).get("texts", [])
            self._renders.update(zip(batch, texts, strict=True))

    def _texts(self, prompts: Sequence[Prompt], *, scoring: bool) -> list[str]:
        if any(isinstance(p, Chat) for p in prompts):
            if not self.is_popsim and scoring:
                raise CapabilityError(
                    f"{self.base_url} is not a popsim server, so chat prompts cannot be scored through it (its "
                    "chat template is unknown); use plain-text prompts or serve the model with `popsim serve`"
                )
            if self.is_popsim:
                self._render_many(prompts)
        return [self.render(p) for p in prompts]

    # ------------------------------------------------------------------ calls
    def generate(self, prompts, *, max_new_tokens=64, temperature=1.0, seed=0, stop=()) -> list[str]:
        temps, seeds = generation_rows(prompts, max_new_tokens, temperature, seed)
        n = len(prompts)
        base = {"model": self.model, "max_tokens": max_new_tokens, "n": 1}
        if stop:
            base["stop"] = list(stop)
        if self.is_popsim:
            texts = self._texts(prompts, scoring=False)
            chunks = [range(s, min(s + self.rows_per_request, n)) for s in range(0, n, self.rows_per_request)]

            def run_chunk(rows: range) -> list[str]:
                body = {**base, "prompt": [texts[r] for r in rows], "temperature": temps[rows[0]],
                        "popsim": {"seeds": [seeds[r] for r in rows], "temperatures": [temps[r] for r in rows]}}
                return [c["text"] for c in _choices(self._request("POST", "/completions", body), len(rows))]

            return [t for part in self._map(run_chunk, chunks) for t in part]

        def run_row(r: int) -> str:  # generic servers take one seed and temperature per request
            body = {**base, "temperature": temps[r], "seed": seeds[r]}
            prompt = prompts[r]
            if isinstance(prompt, Chat):
                messages = [{"role": role, "content": c} for role, c in prompt.messages]
                if prompt.assistant_prefix:  # vLLM's extension for continuing the assistant turn
                    messages.append({"role": "assistant", "content": prompt.assistant_prefix})
                    body |= {"add_generation_prompt": False, "continue_final_message": True}
                out = self._request("POST", "/chat/completions", body | {"messages": messages})
                return str(_choices(out, 1)[0]["message"]["content"] or "")
            return str(_choices(self._request("POST", "/completions", body | {"prompt": prompt}), 1)[0]["text"])

        return self._map(run_row, range(n))

    def score(self, prompts, continuations, *, temperature=1.0) -> torch.Tensor:
        check_batch("prompts", prompts)
        check_batch("continuations", continuations, expected=len(prompts))
        temps_t = as_row_values(temperature, len(prompts))
        if temps_t.requires_grad:
            raise CapabilityError(
                "scores over HTTP are not differentiable in the temperature, so MoP cannot be fitted through the "
                "openai backend; fit with an open in-process model (e.g. smollm2-135m-instruct) and simulate here"
            )
        temps = temps_t.detach().double().tolist()
        texts = self._texts(prompts, scoring=True)
        n = len(prompts)
        if not self.is_popsim and any(abs(t - 1.0) > 1e-6 for t in temps) and not self._warned_tau:
            self._warned_tau = True
            warnings.warn(
                f"{self.base_url} is not a popsim server: scores at temperature != 1 are approximated from the top-"
                f"{self.top_logprobs} logprobs (serve the model with `popsim serve` for exact temperature scaling)",
                stacklevel=2,
            )
        chunks = [range(s, min(s + self.rows_per_request, n)) for s in range(0, n, self.rows_per_request)]

        def run_chunk(rows: range) -> list[float]:
            full = [texts[r] + continuations[r] for r in rows]
            body: dict[str, Any] = {"model": self.model, "prompt": full, "max_tokens": 0, "echo": True,
                                    "temperature": 1.0}
            if self.is_popsim:
                body["logprobs"] = 0
                body["popsim"] = {"continuation_start": [len(texts[r]) for r in rows],
                                  "temperatures": [temps[r] for r in rows]}
            else:
                body["logprobs"] = self.top_logprobs
            choices = _choices(self._request("POST", "/completions", body), len(rows))
            out = []
            for r, text, choice in zip(rows, full, choices, strict=True):
                logprobs = choice.get("logprobs")
                if not logprobs or not logprobs.get("token_logprobs"):
                    raise CapabilityError(
                        f"{self.base_url} returned no prompt logprobs for echo requests; {_NO_LOGPROBS}")
                tau = 1.0 if self.is_popsim else temps[r]
                out.append(continuation_logprob(logprobs, prompt_len=len(texts[r]), full_text=text, temperature=tau))
            return out

        values = [v for part in self._map(run_chunk, chunks) for v in part]
        return torch.tensor(values, dtype=torch.float32)


def _choices(payload: dict, expected: int) -> list[dict]:
    """The response's choices in prompt order, checked against the number of prompts sent."""
    choices = payload.get("choices")
    if not isinstance(choices, list) or len(choices) != expected:
        got = len(choices) if isinstance(choices, list) else 0
        raise BackendError(f"the server returned {got} choices for {expected} prompts")
    return sorted(choices, key=lambda c: c.get("index", 0))


def _error_message(response: Any) -> str:
    """An OpenAI-style error body's message, else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict):
        err = body.get("error", body.get("detail", body))
        if isinstance(err, dict):
            return str(err.get("message", err))[:300]
        return str(err)[:300]
    return str(body)[:300]
