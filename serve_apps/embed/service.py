"""EmbedService: `POST /v1/embed` (seed 004, and OpenAI's list form), batching texts across requests.

The model loads on a background thread; until it is ready the service answers 503 (and the
ingest app's /health keeps answering). Each text of a request joins Serve's batch queue
(`@serve.batch`), and the batches that form while the model is busy are merged into its next call
(`coalesce.Coalescer`), so texts from many clients share one model call; results come back in the
request's order.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
from ray import serve
from starlette.requests import Request
from starlette.responses import Response

from serve_apps.embed.coalesce import Coalescer
from serve_apps.embed.metrics import EmbedMetrics
from serve_apps.embed.settings import EmbedSettings
from serve_apps.http import CORS, AddressResolver, HTTPError, app_path, json_response, lone_surrogate, read_body
from serve_apps.ratelimit import AddressLimiter
from trajforge.constants import EMBEDDING_DIM, EMBEDDING_MODEL_NAME
from trajforge.embedding import Embedder, truncate
from trajforge.jsjson import JSONRejected, loads_strict

log = logging.getLogger("trajforge.embed")

# On a CPU a pass of 8 texts costs about as much per token as a pass of 64. sentence-transformers sorts
# a call's texts by length, so passes of 8 pad few texts to a much longer one: on 20-60-word texts a
# call of 26 runs about 1.25x faster in passes of 8 than in one pass.
CPU_FORWARD_BATCH = 8


def forward_batch_size(settings: EmbedSettings) -> int:
    if settings.forward_batch_size:
        return settings.forward_batch_size
    return settings.max_batch_size if settings.num_gpus > 0 else min(CPU_FORWARD_BATCH, settings.max_batch_size)


def load_embedder(settings: EmbedSettings) -> Embedder:
    threads = settings.torch_threads or os.cpu_count()
    device = "cuda" if settings.num_gpus > 0 else "cpu"
    return Embedder(model=settings.model, device=device, batch_size=forward_batch_size(settings), threads=threads)


class EmbedService:
    def __init__(self, settings: EmbedSettings, loader: Callable[[EmbedSettings], Embedder] = load_embedder):
        self.settings = settings
        self.embedder: Embedder | None = None
        self.load_error: str | None = None
        self.model_calls = Coalescer(self._embed_now, settings.max_batch_size)
        self.limiter = AddressLimiter(settings.rate_limits)
        self.addresses = AddressResolver(settings.trusted_proxies)
        self.metrics = EmbedMetrics()
        self.loaded = threading.Event()  # set once the model loaded or failed to
        self._embed_texts.set_max_batch_size(settings.max_batch_size)
        self._embed_texts.set_batch_wait_timeout_s(settings.batch_wait_timeout_s)
        threading.Thread(target=self._load, args=(loader,), name="embed-model-load", daemon=True).start()

    def _load(self, loader: Callable[[EmbedSettings], Embedder]) -> None:
        try:
            self.embedder = loader(self.settings)
            log.info("embedding model loaded (%s on %s)", self.settings.model, self.embedder.device)
        except Exception as exc:  # reported on every request as a 503, not raised into Serve
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.exception("the embedding model failed to load")
        finally:
            self.loaded.set()

    # Batches form every batch_wait_timeout_s while the model is busy; the coalescer merges them, so
    # many may be open at once (bounded by max_ongoing_requests anyway).
    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.02, max_concurrent_batches=1024)
    async def _embed_texts(self, texts: list[str]) -> list[list[float]]:
        self.metrics.batch(len(texts))
        vectors = await self.model_calls.run(texts)
        self.metrics.embedded(len(texts))
        return vectors

    def _embed_now(self, texts: list[str]) -> list[list[float]]:
        return self.embedder.embed(texts).tolist()

    async def __call__(self, request: Request) -> Response:
        try:
            if app_path(request) != "/":  # Serve sends every path under the route prefix here
                route = request.scope.get("root_path") or "/"
                raise HTTPError(404, "not_found", f"no route {request.url.path}: this application answers {route} alone "
                                                  "(POST to embed, GET or HEAD for its status)")
            if request.method == "OPTIONS":
                return Response(status_code=204, headers=CORS)
            if request.method in ("GET", "HEAD"):  # HEAD: the same answer, its body left out by the HTTP server
                return json_response(200, self.status())
            if request.method != "POST":
                raise HTTPError(405, "method_not_allowed", f"{request.method} is not allowed on /v1/embed; use POST (GET or HEAD for "
                                "its status)", headers={"Allow": "GET, HEAD, POST"})
            with self.metrics.request():
                retry = self.limiter.check(self.addresses.resolve(request))
                if retry is not None:
                    raise HTTPError(429, "rate_limited", "too many requests from this address", retryAfter=retry)
                return await self.embed(request)
        except HTTPError as exc:
            return json_response(exc.status, exc.body, exc.headers)

    def status(self) -> dict[str, Any]:
        calls = self.model_calls
        mean_batch = round(calls.items / calls.calls, 2) if calls.calls else None
        return {"ready": self.embedder is not None, "model": EMBEDDING_MODEL_NAME, "error": self.load_error,
                "texts_embedded": calls.items, "batches": calls.calls, "mean_batch_size": mean_batch, "model_seconds": round(calls.busy_s, 3)}

    async def embed(self, request: Request) -> Response:
        return json_response(200, await self.embed_body(await read_body(request, self.settings.max_body_bytes)))

    async def answer_body(self, body: bytes) -> tuple[int, dict[str, Any], dict[str, str]]:
        """`embed_body` for callers through a deployment handle (the OpenAI front's `/v1/embeddings`): status, body, headers."""
        try:
            with self.metrics.request():
                return 200, await self.embed_body(body), {}
        except HTTPError as exc:
            return exc.status, exc.body, exc.headers

    async def embed_body(self, body: bytes) -> dict[str, Any]:
        """The answer to a request body, or HTTPError."""
        try:
            payload = loads_strict(body)
        except JSONRejected as exc:
            raise HTTPError(400, "malformed_json", str(exc)) from None
        texts = _inputs(payload, self.settings.max_inputs)
        encode = _encoder(payload)
        if self.embedder is None:
            message = f"the model failed to load ({self.load_error}); fix embed.model and redeploy" if self.load_error else "the model is still loading; retry in a few seconds"
            raise HTTPError(503, "model_not_ready", message, headers={} if self.load_error else {"Retry-After": "5"})  # a failed load is not a wait
        self.metrics.inputs(texts)
        vectors = await self._embed_in_window(texts)
        data = [{"object": "embedding", "embedding": encode(vector), "index": index} for index, vector in enumerate(vectors)]
        tokens = sum(len(truncate(text).split()) for text in texts)  # words of what was embedded (an estimate: no tokenizer here)
        return {"object": "list", "data": data, "model": EMBEDDING_MODEL_NAME, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    async def _embed_in_window(self, texts: list[str]) -> list[list[float]]:
        """The texts' vectors in order. At most two model calls' worth of one request's texts wait in the batch queue
        at a time, so a request of 2048 texts keeps the model busy without holding every other client's text behind
        all of its own (a one-text request waited for the whole list, past the specification's 10 s client timeout)."""
        window = asyncio.Semaphore(2 * self.settings.max_batch_size)  # acquired in order: the texts enter the queue in order

        async def one(text: str) -> list[float]:
            async with window:
                return await self._embed_texts(text)

        return await asyncio.gather(*(one(text) for text in texts))


def _encoder(payload: dict[str, Any]) -> Callable[[list[float]], Any]:
    """OpenAI's `encoding_format` (`float`, or `base64` of little-endian float32) and `dimensions` (only 384)."""
    dimensions = payload.get("dimensions")
    if dimensions is not None and dimensions != EMBEDDING_DIM:
        raise HTTPError(400, "invalid_dimensions", f"this model gives {EMBEDDING_DIM}-dim vectors; omit dimensions or send {EMBEDDING_DIM}", param="dimensions")
    encoding = payload.get("encoding_format") or "float"
    if encoding == "float":
        return lambda vector: vector
    if encoding == "base64":
        return lambda vector: base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
    raise HTTPError(400, "invalid_encoding_format", f'encoding_format must be "float" or "base64", got {encoding!r}', param="encoding_format")


def _inputs(payload: Any, limit: int) -> list[str]:
    if not isinstance(payload, dict) or "input" not in payload:
        raise HTTPError(400, "missing_input", 'the body must be a JSON object with "input": a string or a list of strings', param="input")
    if payload["input"] in (None, False, 0, ""):  # the specification's `if (!input)`
        raise HTTPError(400, "missing_input", f'"input" is {json.dumps(payload["input"])}, which is empty: send a string or a list of strings', param="input")
    given = payload["input"]
    texts = [given] if isinstance(given, str) else given
    if not isinstance(texts, list) or not texts or not all(isinstance(text, str) for text in texts):
        if isinstance(texts, list) and texts and all(_token_ids(item) for item in texts):  # OpenAI's token-array form
            raise HTTPError(400, "invalid_input", '"input" holds token ids, which this model cannot read (it has its own tokenizer): '
                            "send the texts as strings (LangChain's OpenAIEmbeddings: check_embedding_ctx_length=False)", param="input")
        raise HTTPError(400, "invalid_input", '"input" must be a string or a non-empty list of strings', param="input")
    if not all(texts):  # an empty string in a list is missing input too
        raise HTTPError(400, "missing_input", '"input" must not be an empty string', param="input")
    if len(texts) > limit:
        raise HTTPError(413, "too_many_inputs", f"at most {limit} strings per request, got {len(texts)}", param="input")
    if (surrogate := lone_surrogate(texts)) is not None:
        raise HTTPError(400, "invalid_input", f'"input" holds a lone UTF-16 surrogate ({surrogate}), which is not text', param="input")
    return texts


def _token_ids(item: Any) -> bool:
    """An int, or a non-empty list of ints: one text of OpenAI's token-array `input` forms."""
    if isinstance(item, list):
        return bool(item) and all(isinstance(value, int) and not isinstance(value, bool) for value in item)
    return isinstance(item, int) and not isinstance(item, bool)
