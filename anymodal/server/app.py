"""The OpenAI-compatible HTTP API over one AnyModalModel (FastAPI).

    POST /v1/chat/completions   messages with text / image_url / input_audio parts; stream or not
    POST /v1/embeddings         texts and media (data: URLs) through the model's encoders
    GET  /v1/models             the one model served
    GET  /health                liveness, queue state (no API key needed)

Every bad request is a 4xx JSON body in OpenAI's error shape; an unexpected failure is a 500 with a
one-line message (the traceback goes to the server log, never to the client).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import json
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..agents.convert import block_to_media
from ..errors import AnyModalError
from ..media import Response
from .openai_format import (ChatRequest, EmbeddingRequest, MediaPolicy, RequestError, content_part,
                            message_content, to_conversation)
from .scheduler import Busy, Scheduler

log = logging.getLogger(__name__)
MiB = 2**20


@dataclass
class ServerSettings:
    model_name: str = "anymodal"
    api_key: str | None = None  # None: no key needed
    max_body_mb: float = 32
    max_media_mb: float = 16
    max_concurrency: int = 8  # requests generated together (one batch)
    queue: int = 32  # requests waiting beyond those; more get 429
    batching: bool = True
    allow_remote_urls: bool = False
    files_root: Path | None = None  # local file references allowed only inside it; None: none allowed
    max_tokens_limit: int = 512


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes is answered 413 before it is read whole."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._reject(send)
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge()
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _TooLarge:
            await self._reject(send)

    async def _reject(self, send):
        error = RequestError(413, f"the request body is over the server's limit of {self.limit / MiB:.1f} MiB; "
                                  f"send smaller media (or start the server with a larger --max-body-mb)",
                             code="request_too_large")
        await JSONResponse(error.body(), status_code=413)({"type": "http"}, None, send)


class _TooLarge(Exception):
    pass


def create_app(model, settings: ServerSettings | None = None) -> FastAPI:
    """A FastAPI app serving ``model`` (an AnyModalModel) under ``settings``."""
    settings = settings or ServerSettings()
    scheduler = Scheduler(model, settings.max_concurrency, settings.queue, settings.batching)
    policy = MediaPolicy(int(settings.max_media_mb * MiB), settings.allow_remote_urls, settings.files_root)

    @contextlib.asynccontextmanager
    async def lifespan(_):
        yield
        scheduler.close()

    app = FastAPI(title="anymodal", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.scheduler, app.state.settings = scheduler, settings
    app.add_middleware(BodyLimit, limit=int(settings.max_body_mb * MiB))

    # ------------------------------------------------------------------------------------ errors
    @app.exception_handler(RequestError)
    async def _request_error(_, e: RequestError):
        return JSONResponse(e.body(), status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        message = f"invalid request body: {where or 'body'}: {first.get('msg', 'malformed')}"
        return JSONResponse(RequestError(400, message, param=where or None).body(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_, e: StarletteHTTPException):  # unknown routes (404), wrong methods (405)
        return JSONResponse(RequestError(e.status_code, str(e.detail), code="http_error").body(),
                            status_code=e.status_code)

    @app.exception_handler(AnyModalError)
    async def _anymodal_error(_, e: AnyModalError):
        return JSONResponse(RequestError(400, str(e), code=type(e).__name__).body(), status_code=400)

    @app.exception_handler(Busy)
    async def _busy(_, e: Busy):
        return JSONResponse(RequestError(429, str(e), code="server_busy").body(), status_code=429,
                            headers={"Retry-After": "1"})

    @app.exception_handler(Exception)
    async def _unexpected(_, e: Exception):
        log.exception("unexpected error")
        body = RequestError(500, f"internal error ({type(e).__name__}); see the server log", code="internal").body()
        body["error"]["type"] = "server_error"
        return JSONResponse(body, status_code=500)

    @app.middleware("http")
    async def _api_key(request: Request, call_next):
        if settings.api_key and request.url.path.startswith("/v1/"):
            sent = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(sent, f"Bearer {settings.api_key}".encode()):
                error = RequestError(401, "missing or wrong API key; send 'Authorization: Bearer <key>'",
                                     code="invalid_api_key")
                return JSONResponse(error.body(), status_code=401)
        return await call_next(request)

    # ------------------------------------------------------------------------------------ routes
    @app.get("/health")
    async def health():
        return {"status": "ok", "model": settings.model_name, "admitted": scheduler.admitted,
                "model_calls": scheduler.batches, "batching": settings.batching}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": settings.model_name, "object": "model", "created": 0,
                                            "owned_by": "anymodal"}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: ChatRequest):
        conversation = await asyncio.to_thread(to_conversation, request.messages, policy)  # decodes media
        options = _generation_options(request, settings)
        if request.stream:
            if scheduler.full:  # checked before the 200 status line of the stream goes out
                raise scheduler.busy()
            pieces = scheduler.stream(conversation, request.prefill, **options)
            return StreamingResponse(_sse(pieces, settings.model_name), media_type="text/event-stream")
        response: Response = await scheduler.generate(conversation, request.prefill, **options)
        example = model.processor.encode(conversation, add_generation_prompt=True, prefill=request.prefill)
        prompt_tokens = len(example.input_ids) - len(example.prefill_ids)  # media counted as their encoder tokens
        return _completion(response, settings.model_name, prompt_tokens)

    @app.post("/v1/embeddings")
    async def embeddings(request: EmbeddingRequest):
        inputs = [request.input] if isinstance(request.input, str) else request.input
        items = [_embedding_item(x, policy, f"input[{i}]") for i, x in enumerate(inputs)]
        vectors = await scheduler.call(lambda: [_embed(model, item) for item in items])
        data = [{"object": "embedding", "index": i, "embedding": _encode_vector(v, request.encoding_format)}
                for i, v in enumerate(vectors)]
        tokens = sum(len(model.tokenizer.encode(x, add_special_tokens=False)) for x in items if isinstance(x, str))
        return {"object": "list", "data": data, "model": settings.model_name,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    return app


# ------------------------------------------------------------------------------------ helpers
def _generation_options(request: ChatRequest, settings: ServerSettings) -> dict[str, Any]:
    options: dict[str, Any] = {}
    max_tokens = request.max_completion_tokens or request.max_tokens
    if max_tokens is not None:
        if max_tokens > settings.max_tokens_limit:
            raise RequestError(400, f"max_tokens {max_tokens} is over this server's limit of "
                                    f"{settings.max_tokens_limit}", param="max_tokens")
        options["max_new_tokens"] = max_tokens
    if request.temperature:
        options.update(do_sample=True, temperature=request.temperature)
    if request.top_p is not None and request.temperature:
        options["top_p"] = request.top_p
    if request.retrieval_k is not None:
        options["retrieval_k"] = request.retrieval_k
    return options


def _completion(response: Response, model_name: str, prompt_tokens: int) -> dict[str, Any]:
    completion_tokens = len(response.token_ids)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
        "model": model_name,
        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                     "message": {"role": "assistant", "content": message_content(response.parts)}}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


async def _sse(pieces, model_name: str):
    """Server-sent events in OpenAI's chunk format: text pieces as string deltas, each media part as a
    one-part content list, then a chunk with finish_reason and ``data: [DONE]``."""
    ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

    def event(delta: dict[str, Any], finish: str | None = None) -> str:
        chunk = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model_name,
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}
        return f"data: {json.dumps(chunk)}\n\n"

    yield event({"role": "assistant", "content": ""})
    try:
        async for piece in pieces:
            yield event({"content": piece if isinstance(piece, str) else [content_part(piece)]})
    except Busy as e:
        yield f"data: {json.dumps(RequestError(429, str(e), code='server_busy').body())}\n\n"
        return
    except AnyModalError as e:
        yield f"data: {json.dumps(RequestError(400, str(e), code=type(e).__name__).body())}\n\n"
        return
    except Exception as e:  # the status line is sent already: report in-band, log the traceback
        log.exception("stream failed")
        yield f"data: {json.dumps({'error': {'message': f'internal error ({type(e).__name__})', 'type': 'server_error', 'param': None, 'code': 'internal'}})}\n\n"
        return
    yield event({}, finish="stop")
    yield "data: [DONE]\n\n"


def _embedding_item(value: str, policy: MediaPolicy, param: str):
    """A text, or a media item when the input is a data: URL (the MIME type picks the modality)."""
    if not value.startswith("data:"):
        if not value:
            raise RequestError(400, f"{param}: empty input", param=param)
        return value
    kind = value[len("data:"):].split("/", 1)[0]
    if kind not in ("image", "audio", "video"):
        raise RequestError(400, f"{param}: data: URL of type {kind!r}; embed image, audio or video", param=param)
    try:
        return block_to_media(policy.block(kind, value, param))
    except AnyModalError as e:
        raise RequestError(400, f"{param}: {e}", code=type(e).__name__, param=param) from None


@torch.inference_mode()
def _embed(model, item) -> np.ndarray:
    """Text: the CLIP-style text tower of an encoder that has one, else the LLM's mean last hidden state.
    Media: the modality's encoder, mean-pooled over the item's tokens."""
    if isinstance(item, str):
        for encoder in model.encoders.values():
            if hasattr(encoder, "encode_text"):
                try:
                    return encoder.encode_text([item])[0].float().cpu().numpy()  # [D]
                except AnyModalError:
                    continue  # a vision-only checkpoint: no text tower
        ids = model.tokenizer(item, return_tensors="pt").input_ids.to(model.device)  # [1, L]
        hidden = model.llm(input_ids=ids, output_hidden_states=True).hidden_states[-1]  # [1, L, D_llm]
        return hidden[0].mean(0).float().cpu().numpy()
    if item.modality.value not in model.encoders:
        raise RequestError(400, f"this model has no {item.modality.value} encoder; it embeds "
                                f"{sorted(model.encoders)} and text")
    encoder = model.encoders[item.modality.value]
    features = encoder.encode(encoder.preprocess([item]).to(model.device))  # [1, T, D]
    return features[0].float().mean(0).cpu().numpy()  # [D]


def _encode_vector(vector: np.ndarray, encoding: str) -> list[float] | str:
    if encoding == "base64":  # what the openai client asks for by default: little-endian float32
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector.tolist()

