"""``popsim serve``: an OpenAI-compatible HTTP server over a popsim LanguageModel (FastAPI + uvicorn).

Endpoints: ``POST /v1/completions`` (legacy completions: generation, and prompt scoring with ``echo`` +
``logprobs`` + ``max_tokens=0``), ``POST /v1/chat/completions``, ``GET /v1/models``, ``GET /health``, and
popsim's ``POST /v1/popsim/render`` (render chats with the model's template). Concurrent requests are
gathered by a :class:`~popsim.serve.batcher.MicroBatcher` into one batched LM call.

Hardening: binds 127.0.0.1 unless told otherwise; optional API key (``Authorization: Bearer``, compared
in constant time); limits on body size, prompts per request, tokens and requests in flight; malformed
requests get a 4xx OpenAI-style JSON error (``{"error": {"message", "type", "param", "code"}}``).
"""

# no `from __future__ import annotations`: FastAPI reads the handlers' annotations (Request) at definition
import hmac
import json
import logging
import secrets
import sys
import time
from contextlib import asynccontextmanager
from typing import Any

from pydantic import BaseModel, ValidationError

from popsim.exceptions import LMInputError, PopsimError
from popsim.lm.base import Chat, LanguageModel, row_seeds
from popsim.serve.batcher import MicroBatcher
from popsim.serve.engine import Engine, GenerateJob, ScoreJob
from popsim.serve.protocol import ChatRequest, CompletionRequest, PopsimExtension, RenderRequest, ServeLimits

__all__ = ["create_app", "serve"]

log = logging.getLogger("popsim.serve")


class APIError(Exception):
    """An error answered as OpenAI-style JSON with an HTTP status."""

    def __init__(self, status: int, message: str, *, kind: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code


def _error_body(status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
                code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code or str(status)}}


def create_app(lm: LanguageModel, *, api_key: str | None = None, limits: ServeLimits | None = None,
               window_ms: float = 5.0, max_batch: int = 64) -> Any:
    """The FastAPI app serving ``lm``; ``window_ms``/``max_batch`` tune the micro-batcher."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    limits = limits or ServeLimits()
    engine = Engine(lm)
    identity = lm.identity  # weights' digest etc.: computed once here, not on the event loop later
    batcher = MicroBatcher(engine.run_batch, window_s=window_ms / 1000.0, max_batch=max_batch)
    state = {"in_flight": 0, "started": int(time.time())}

    @asynccontextmanager
    async def lifespan(_app):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="popsim serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.batcher = batcher

    @app.exception_handler(APIError)
    async def _api_error(_request, exc: APIError):
        return JSONResponse(_error_body(exc.status, exc.message, exc.kind, exc.param, exc.code), status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request, exc):
        return JSONResponse(_error_body(exc.status_code, str(exc.detail)), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _internal(_request, exc: Exception):
        log.exception("internal error")
        return JSONResponse(_error_body(500, f"internal error: {type(exc).__name__}", "server_error"), status_code=500)

    @app.middleware("http")
    async def _limit_concurrency(request: Request, call_next):
        if request.url.path == "/health":
            return await call_next(request)
        if state["in_flight"] >= limits.max_concurrency:
            return JSONResponse(_error_body(429, "too many requests in flight; retry shortly", "rate_limit_error"),
                                status_code=429, headers={"Retry-After": "1"})
        state["in_flight"] += 1
        try:
            return await call_next(request)
        finally:
            state["in_flight"] -= 1

    def authorise(request: Request) -> None:
        if not api_key:
            return
        header = request.headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(given.encode(), api_key.encode()):
            raise APIError(401, "invalid or missing API key (send Authorization: Bearer KEY)",
                           kind="authentication_error", code="invalid_api_key")

    async def parse(request: Request, schema: type[BaseModel]) -> Any:
        authorise(request)
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limits.max_body_bytes:
            raise APIError(413, f"request body over {limits.max_body_bytes} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limits.max_body_bytes:
                raise APIError(413, f"request body over {limits.max_body_bytes} bytes")
            chunks.append(chunk)
        try:
            payload = json.loads(b"".join(chunks))
        except (ValueError, UnicodeDecodeError):
            raise APIError(400, "request body is not valid JSON") from None
        if not isinstance(payload, dict):
            raise APIError(400, "request body must be a JSON object")
        try:
            body = schema.model_validate(payload)
            if hasattr(body, "check"):
                body.check(limits)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ())) or None
            raise APIError(400, f"{where or 'body'}: {first.get('msg', 'invalid')}", param=where) from None
        except ValueError as exc:
            raise APIError(400, str(exc)) from None
        if getattr(body, "model", None) not in (None, "", lm.name):
            raise APIError(404, f"model '{body.model}' is not served here; this server serves '{lm.name}'",
                           code="model_not_found")
        return body

    def check_tokens(n_tokens: int) -> None:
        if n_tokens > limits.max_prompt_tokens:
            raise APIError(400, f"prompt has {n_tokens} tokens; at most {limits.max_prompt_tokens}",
                           param="prompt", code="context_length_exceeded")

    async def run(key: tuple, jobs: list) -> list:
        try:
            return await batcher.submit_many(key, jobs)
        except (LMInputError, PopsimError) as exc:
            raise APIError(400, str(exc)) from None

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": lm.name, "waiting": batcher.waiting, "lm_calls": batcher.calls,
                "rows": batcher.rows}

    @app.get("/v1/models")
    async def models(request: Request):
        authorise(request)
        card = {"id": lm.name, "object": "model", "created": state["started"], "owned_by": "popsim",
                "popsim": {"echo_scoring": engine.can_score, "max_batch": max_batch, "identity": identity}}
        return {"object": "list", "data": [card]}

    @app.post("/v1/popsim/render")
    async def render(request: Request):
        body: RenderRequest = await parse(request, RenderRequest)
        if len(body.chats) > limits.max_prompts:
            raise APIError(400, f"chats has {len(body.chats)} items; at most {limits.max_prompts}")
        try:
            chats = [Chat(tuple((m.role, m.content) for m in c.messages), c.assistant_prefix) for c in body.chats]
            return {"texts": [lm.render(c) for c in chats]}
        except PopsimError as exc:
            raise APIError(400, str(exc)) from None
        except Exception as exc:  # a chat template may reject a conversation (e.g. roles out of order)
            raise APIError(400, f"the chat template rejected a conversation: {exc}") from None

    @app.post("/v1/completions")
    async def completions(request: Request):
        body: CompletionRequest = await parse(request, CompletionRequest)
        prompts = body.prompts
        n = len(prompts)
        ext = body.popsim or PopsimExtension()
        wants_logprobs = body.logprobs is not None or ext.continuation_start is not None
        if wants_logprobs and not engine.can_score:
            raise APIError(400, f"model '{lm.name}' exposes no token logprobs (echo/logprobs unsupported)",
                           param="logprobs")
        if ext.continuation_start is not None:  # scoring: prompt[:k] is tokenised in score_rows
            prompt_tokens = [engine.prompt_tokens(p[:k]) for p, k in zip(prompts, ext.continuation_start, strict=True)]
        elif wants_logprobs:
            prompt_tokens = [engine.prompt_tokens(p) for p in prompts]
        else:
            prompt_tokens = [([0] * engine.count_prompt_tokens(p), []) for p in prompts]
        for ids, _ in prompt_tokens:
            check_tokens(len(ids))
        generated = [""] * n
        if body.max_tokens > 0:
            temps = ext.temperatures or [body.temperature] * n
            seeds = ext.seeds or row_seeds(body.seed if body.seed is not None else secrets.randbits(31), n)
            jobs = [GenerateJob(p, t, s) for p, t, s in zip(prompts, temps, seeds, strict=True)]
            generated = await run(("generate", body.max_tokens, body.stops), jobs)
        logprobs: list[dict | None] = [None] * n
        if wants_logprobs:
            logprobs = await score_rows(body, ext, prompts, prompt_tokens, generated)
        choices = [{"index": i, "text": (prompts[i] if body.echo else "") + generated[i], "logprobs": logprobs[i],
                    "finish_reason": "length" if body.max_tokens == 0 else "stop"} for i in range(n)]
        n_prompt = sum(len(ids) for ids, _ in prompt_tokens)
        if ext.continuation_start is not None:  # the whole prompt, continuation included
            n_prompt = sum(len(lp["tokens"]) for lp in logprobs if lp)
        n_completion = sum(len(engine.lm.encode_continuation(g)) for g in generated if g) \
            if engine.tokenizer is not None else 0
        return {"id": "cmpl-" + secrets.token_hex(12), "object": "text_completion", "created": int(time.time()),
                "model": lm.name, "choices": choices,
                "usage": {"prompt_tokens": n_prompt, "completion_tokens": n_completion,
                          "total_tokens": n_prompt + n_completion}}

    async def score_rows(body: CompletionRequest, ext: PopsimExtension, prompts: list[str],
                         prompt_tokens: list, generated: list[str]) -> list[dict]:
        """Build one ScoreJob per prompt, score them in one batch, and format OpenAI legacy logprobs."""
        top_k = body.logprobs or 0
        temps = ext.temperatures or [1.0] * len(prompts)
        jobs, layouts = [], []
        for i, prompt in enumerate(prompts):
            ids, offsets = prompt_tokens[i]
            if ext.continuation_start is not None:
                k = ext.continuation_start[i]
                pre_ids, pre_off = ids, offsets  # of prompt[:k]
                tgt_ids, tgt_off = engine.continuation_tokens(prompt[k:])
                check_tokens(len(pre_ids) + len(tgt_ids))
                jobs.append(ScoreJob(tuple(pre_ids), tuple(tgt_ids), temps[i], top_k))
                layouts.append((prompt, pre_ids + tgt_ids, pre_off + [k + o for o in tgt_off], len(pre_ids)))
                continue
            gen_ids, gen_off = engine.continuation_tokens(generated[i]) if generated[i] else ([], [])
            if body.echo:
                jobs.append(ScoreJob(tuple(ids[:1]), tuple(ids[1:] + gen_ids), temps[i], top_k))
                layouts.append((prompt + generated[i], ids + gen_ids,
                                offsets + [len(prompt) + o for o in gen_off], min(1, len(ids))))
            else:
                jobs.append(ScoreJob(tuple(ids), tuple(gen_ids), temps[i], top_k))
                layouts.append((generated[i], gen_ids, gen_off, 0))
        rows = await run(("score",), jobs)
        out = []
        for (text, _ids, offsets, n_unscored), row in zip(layouts, rows, strict=True):
            ends = [*offsets[1:], len(text)]
            tokens = [text[a:b] for a, b in zip(offsets, ends, strict=True)]
            if top_k > 0:
                tops = [None] * n_unscored + [dict(alts) for alts in row.top]
            else:
                tops = [None] * n_unscored + [{t: v} for t, v in zip(tokens[n_unscored:], row.logprobs, strict=True)]
            out.append({"tokens": tokens, "token_logprobs": [None] * n_unscored + row.logprobs,
                        "top_logprobs": tops, "text_offset": offsets})
        return out

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body: ChatRequest = await parse(request, ChatRequest)
        messages = [(m.role, m.content) for m in body.messages]
        prefix = ""
        if body.continue_final_message:
            prefix = messages.pop()[1]
            if not messages:
                raise APIError(400, "continue_final_message needs a message before the assistant's", param="messages")
        elif not body.add_generation_prompt:
            raise APIError(400, "add_generation_prompt=false is only supported with continue_final_message")
        try:
            text = lm.render(Chat(tuple(messages), prefix))
        except PopsimError as exc:
            raise APIError(400, str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - a template may reject a conversation
            raise APIError(400, f"the chat template rejected the conversation: {exc}") from None
        if engine.tokenizer is not None:
            check_tokens(len(engine.lm.encode_prompt(text)))
        seed = row_seeds(body.seed if body.seed is not None else secrets.randbits(31), 1)[0]
        [content] = await run(("generate", body.new_tokens, body.stops), [GenerateJob(text, body.temperature, seed)])
        return {"id": "chatcmpl-" + secrets.token_hex(12), "object": "chat.completion", "created": int(time.time()),
                "model": lm.name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}

    return app


def serve(lm_name: str, *, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          max_batch: int = 64, window_ms: float = 5.0, limits: ServeLimits | None = None,
          dtype: str = "auto", device: str = "auto") -> None:
    """Load ``lm_name`` and serve it until interrupted (``python -m popsim serve``)."""
    try:
        import uvicorn
    except ImportError:
        raise PopsimError("popsim serve needs fastapi and uvicorn; run `pip install 'popsim[serve]'`") from None
    from popsim.lm import load_lm

    if max_batch < 1 or window_ms < 0:
        raise PopsimError(f"--max-batch must be >= 1 and --batch-window-ms >= 0; got {max_batch}, {window_ms}")
    if not (0 < port < 65536):
        raise PopsimError(f"--port must be between 1 and 65535; got {port}")
    lm = load_lm(lm_name, dtype=dtype, device=device)
    if host not in {"127.0.0.1", "localhost", "::1"} and not api_key:
        print(f"popsim serve: warning: listening on {host} without an API key; anyone who can reach it can use it",
              file=sys.stderr)
    app = create_app(lm, api_key=api_key, limits=limits, window_ms=window_ms, max_batch=max_batch)
    print(f"popsim serve: {lm.name} on http://{host}:{port}/v1 (max batch {max_batch}, window {window_ms:g} ms"
          f"{', API key required' if api_key else ''})", file=sys.stderr, flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5)
