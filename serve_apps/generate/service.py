"""The OpenAI-compatible HTTP front: `/v1/chat/completions`, `/v1/completions`, `/v1/responses`, `/v1/embeddings`,
`/v1/models`, `/health`.

External tools and the teacher loop use local models through it exactly as they use remote ones,
with OpenAI's SDKs pointed at `<url>/generate/v1`. The request and answer shapes are in
`openai_api`; `stream: true` answers as server-sent events (`streaming`): live from a model in this
replica or from a GenerationActor (`actors.engines.live_text`), else once the completions are
finished, one event per token with its log-probability. `/v1/responses` (OpenAI's Responses API, `responses_api`) is a
chat request underneath, its answer a Response object, streamed as the Responses events (`responses_stream`).
`/v1/embeddings` is answered by the embed application.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from actors.engines.live_text import text_stream
from actors.engines.types import Completion, GenerationRequest
from serve_apps.embed.forward import EmbeddingsForwarder
from serve_apps.generate.actors_backend import ActorsBackend, _check_room  # noqa: F401 (_check_room: tests)
from serve_apps.generate import openai_api, responses_api
from serve_apps.generate.chat_message import LiveMessage
from serve_apps.generate.metrics import GenerateMetrics, endpoint
from serve_apps.generate.settings import GenerateSettings
from serve_apps.generate.responses_stream import ResponseEvents
from serve_apps.generate.streaming import ChatEvents, server_sent_events
from serve_apps.http import CORS, HTTPError, app_path, json_response, openai_error, read_body
from trajforge.constants import EMBEDDING_MODEL_NAME


log = logging.getLogger("trajforge.generate")
SSE_HEADERS = {**CORS, "Cache-Control": "no-cache"}
POST_ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/embeddings")


def build_engine(settings: GenerateSettings):
    if settings.engine == "openai":
        from actors.engines.openai_engine import OpenAIEngine

        if not settings.upstream_url:
            raise ValueError("engine openai needs upstream_url")
        return OpenAIEngine(settings.upstream_url, settings.model)
    from actors.engines.factory import model_path
    from actors.engines.transformers_engine import TransformersEngine

    return TransformersEngine(model_path(settings.model), device="cuda" if settings.num_gpus else "cpu")


class GenerateService:
    def __init__(self, settings: GenerateSettings, engine: Any = None, actor_settings: Any = None):
        self.settings = settings
        self.engine = engine or (ActorsBackend(actor_settings) if settings.backend == "actors" else build_engine(settings))
        self.model_name = settings.served_model_name or Path(str(self.engine.model)).name
        self.uses_actors = settings.backend == "actors"
        self._engine_thread = None if self.uses_actors else ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
        self._cancellable = not self.uses_actors and "cancelled" in inspect.signature(self.engine.generate).parameters
        self.embed = EmbeddingsForwarder(settings.embed_app, "generate.embed_app")
        self.created = int(time.time())
        self.metrics = GenerateMetrics()  # also the totals /health reports

    async def __call__(self, request: Request) -> Response:
        try:
            path = app_path(request)
            if request.method == "OPTIONS":
                return Response(status_code=204, headers=CORS)
            if path == "/health":  # 503 once the engine says it is not ok (the actors gone for good)
                health = {"ok": True, **self.engine.health(), **self.metrics.counts}
                return json_response(200 if health["ok"] else 503, health)
            with self.metrics.request(endpoint=endpoint(path)):
                return await self._route(request, path)
        except HTTPError as exc:
            return openai_error(exc)

    async def _route(self, request: Request, path: str) -> Response:
        if path == "/v1/models" or path.startswith("/v1/models/"):
            if request.method not in ("GET", "HEAD"):
                raise HTTPError(405, "method_not_allowed", f"{request.method} is not allowed on {request.url.path}; use GET", headers={"Allow": "GET"})
            return await self.models(path[len("/v1/models/"):])
        if path not in POST_ROUTES:
            raise HTTPError(404, "not_found", f"no route {request.url.path}: use /v1/chat/completions, /v1/completions, /v1/responses, "
                                              "/v1/embeddings, /v1/models or /health")
        if request.method != "POST":
            raise HTTPError(405, "method_not_allowed", f"{request.method} is not allowed on {request.url.path}; use POST", headers={"Allow": "POST"})
        if path == "/v1/embeddings":
            return await self.embeddings(request)
        if path == "/v1/responses":
            return await self.respond(request)
        return await self.complete(request, chat=path == "/v1/chat/completions")

    async def models(self, model_id: str) -> Response:
        """`GET /v1/models` lists the served model, then the embedding model where `/v1/embeddings` answers (the embed
        application is deployed and its model did not fail to load); `GET /v1/models/{id}` describes one."""
        names = [self.model_name] + ([EMBEDDING_MODEL_NAME] if await self.embed.serves_embeddings() else [])
        cards = {name: {"id": name, "object": "model", "created": self.created, "owned_by": "trajforge"} for name in names}
        if not model_id:
            return json_response(200, {"object": "list", "data": list(cards.values())})
        if model_id not in cards:
            raise HTTPError(404, "model_not_found", f"model {model_id!r} is not served here; /v1/models lists {names}")
        return json_response(200, cards[model_id])

    async def embeddings(self, request: Request) -> Response:
        """OpenAI's `/v1/embeddings`, answered by the embed application of the same Serve instance. Any model name is
        taken for the embedding model (clients send their own default) except this front's generation model, which
        does not embed: 404, as the chat routes answer the embedding model."""
        raw = await read_body(request, self.settings.max_body_bytes)
        try:
            asked = json.loads(raw).get("model")
        except (ValueError, AttributeError):  # the embed application says what is wrong with the body
            asked = None
        if asked == self.model_name:
            raise HTTPError(404, "model_not_found", f"model {asked!r} generates and does not embed: ask {EMBEDDING_MODEL_NAME!r} "
                                                    "on /v1/embeddings", param="model")
        return await self.embed(raw)

    async def complete(self, request: Request, chat: bool) -> Response:
        body = _load_json(await read_body(request, self.settings.max_body_bytes))
        parsed = openai_api.parse(body, chat, model_name=self.model_name, max_tokens_limit=self.settings.max_tokens_limit,
                                  max_choices=self.settings.max_choices, reasoning_parser=self.settings.reasoning_parser)
        tokenizer = getattr(self.engine, "tokenizer", None)
        if parsed.echo and tokenizer is None and any(choice.prompt is None for choice in parsed.requests):
            raise HTTPError(400, "invalid_request_error", '"echo" of a prompt given as token ids needs the model\'s tokenizer, '
                                                          "which this front does not have: send the prompt as text", param="echo")
        self.metrics.add("requests")
        if parsed.stream and self._streams_live(parsed):
            first, items = await self._live_start(parsed)
            return _event_stream(self._live_events(parsed, first, items, ChatEvents(parsed, self.model_name, tokenizer)))
        completions = await self._completions(parsed)
        if not parsed.stream:
            return json_response(200, openai_api.answer(parsed, completions, self.model_name, tokenizer))
        events = [event for index, completion in enumerate(completions)
                  for event in openai_api.token_chunks(parsed, self.model_name, index, completion, tokenizer)]
        if parsed.include_usage:
            events.append(openai_api.usage_chunk(parsed, self.model_name, completions))
        return StreamingResponse(server_sent_events(events), media_type="text/event-stream", headers=SSE_HEADERS)

    async def respond(self, request: Request) -> Response:
        """OpenAI's Responses API (`responses_api.py`): the body as a chat request, its answer as a Response object,
        streamed as the Responses events (`responses_stream.py`) from the chat answer's live deltas."""
        body = _load_json(await read_body(request, self.settings.max_body_bytes))
        asked, parsed = responses_api.parse(body, model_name=self.model_name, max_tokens_limit=self.settings.max_tokens_limit,
                                            reasoning_parser=self.settings.reasoning_parser)
        self.metrics.add("requests")
        if not parsed.stream:
            (completion,) = await self._completions(parsed)
            return json_response(200, responses_api.response(asked, parsed, completion, self.model_name, getattr(self.engine, "tokenizer", None)))
        if self._streams_live(parsed):
            first, items = await self._live_start(parsed)
        else:  # an engine that cannot stream: the finished answer, as the same events
            (first,), items = await self._completions(parsed), _no_more()
        shape = ResponseEvents(asked, parsed, self.model_name, getattr(self.engine, "tokenizer", None))
        return _event_stream(self._live_events(parsed, first, items, shape))

    def _streams_live(self, parsed: openai_api.Parsed) -> bool:
        return len(parsed.requests) == 1 and not parsed.logprobs and hasattr(self.engine, "stream_text" if self.uses_actors else "generate_streaming")

    async def _completions(self, parsed: openai_api.Parsed) -> list[Completion]:
        """The parsed request's completions, from the actors or this replica's engine; a failed one is the answer (raised)."""
        if self.uses_actors:
            try:
                completions = await self.engine.generate_async(parsed.requests)
            except asyncio.CancelledError:
                self.metrics.add("requests_hung_up")
                raise
            self.metrics.add("completion_tokens", sum(completion.completion_tokens for completion in completions))
        else:
            completions = await self._generate_here(parsed.requests)
        failed = next((completion for completion in completions if completion.finish_reason == "error"), None)
        if failed is not None:
            raise _failure(failed)
        return completions

    async def _generate_here(self, requests: list[GenerationRequest]) -> list[Completion]:
        """The requests on this replica's engine; a client that goes away (Serve cancels its handler) stops the
        engine at its next token where the engine can be stopped (`generate(..., cancelled=)`)."""
        cancelled = threading.Event()
        method = functools.partial(self.engine.generate, cancelled=cancelled) if self._cancellable else self.engine.generate
        try:
            return await asyncio.wrap_future(self._run_engine(method, requests))
        except asyncio.CancelledError:
            cancelled.set()
            self.metrics.add("requests_hung_up")
            raise

    def _run_engine(self, method, *args) -> Future:
        """An engine call on the replica's one engine thread (one call at a time), its tokens counted before its result is seen."""

        def counted():
            result = method(*args)
            self.metrics.add("completion_tokens", sum(c.completion_tokens for c in (result if isinstance(result, list) else [result])))
            return result

        return self._engine_thread.submit(counted)

    async def _live_start(self, parsed: openai_api.Parsed):
        """One choice streamed while the model samples it: text as it becomes final, one event per piece (no
        log-probabilities; a client that asks for them gets the events once the completion is done). A client that
        goes away stops the model. An engine that fails before any text gives a real error status: the first item is
        awaited here, before the answer's status is sent."""
        (request,) = parsed.requests
        items = self.engine.stream_text(request) if self.uses_actors else self._engine_stream(request)
        try:
            first = await anext(items)
        except asyncio.CancelledError:  # its client went away before the first piece (waiting behind other calls)
            self.metrics.add("streams_hung_up")
            raise
        if isinstance(first, Completion) and first.finish_reason == "error":
            await items.aclose()
            raise _failure(first)
        return first, items

    async def _engine_stream(self, request: GenerationRequest):
        """`text_stream` over this replica's engine, read from a worker thread so the event loop never waits on it."""
        cancelled = threading.Event()
        pieces = text_stream(self.engine, request, self._run_engine, self.settings.generation_timeout_s, cancelled)
        try:
            while (item := await asyncio.to_thread(next, pieces, None)) is not None:
                yield item
        finally:
            cancelled.set()  # the engine stops at its next token

    async def _live_events(self, parsed: openai_api.Parsed, first: str | Completion, items, shape):
        """The answer's events in a route's `shape` (`streaming.ChatEvents`, `responses_stream.ResponseEvents`), from its
        deltas: reasoning, content up to a tool call, then the calls."""
        completion, failed = None, False
        try:
            for payload in shape.start():
                yield shape.frame(payload)
            item, parts = first, LiveMessage(parsed)
            while not isinstance(item, Completion):
                for delta in parts.add(item):
                    for payload in shape.delta(delta):
                        yield shape.frame(payload)
                item = await anext(items)
            completion = item
            if completion.finish_reason == "error":
                yield shape.frame(_stream_error(completion.error or "the engine failed"))
            else:
                deltas, finish_reason = parts.finish(completion.text, completion.finish_reason)
                for payload in [payload for delta in deltas for payload in shape.delta(delta)] + shape.end(completion, finish_reason):
                    yield shape.frame(payload)
            yield shape.closing
        except Exception as exc:  # the engine or an actor failed mid-stream (an actor died for good): said in the stream
            log.exception("a streamed generation failed")
            failed = True
            yield shape.frame(_stream_error(f"{type(exc).__name__}: {exc}"))
            yield shape.closing
        finally:
            if completion is None and not failed:
                self.metrics.add("streams_hung_up")
            await items.aclose()


async def _no_more():
    """The rest of a stream whose first item was its whole Completion."""
    return
    yield


def _event_stream(events) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _load_json(raw: bytes) -> Any:
    """The body as OpenAI's and vLLM's servers read it: UTF-8 JSON, a repeated key's last value kept; NaN and Infinity refused."""
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise HTTPError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None


def _failure(completion: Completion) -> HTTPError:
    """A failed completion as an answer: 400 when the request was at fault (a prompt over the context, an unusable
    schema), so clients do not retry it; 500 when the engine failed."""
    if completion.invalid_request:
        return HTTPError(400, completion.error_code or "invalid_request_error", completion.error or "the request cannot be served")
    return HTTPError(500, "generation_failed", completion.error or "the engine failed")


def _stream_error(message: str) -> dict[str, Any]:
    """The event that ends a stream whose generation failed after its 200 was sent (as vLLM's server sends it)."""
    return {"error": {"message": message, "type": "generation_failed", "param": None, "code": "generation_failed"}}
