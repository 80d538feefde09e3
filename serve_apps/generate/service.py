"""The OpenAI-compatible HTTP front: `/v1/chat/completions`, `/v1/completions`, `/v1/models`, `/health`.

External tools and the teacher loop use local models through it exactly as they use remote ones.
Answers follow OpenAI's shapes, with `logprobs` (and, when asked with vLLM's
`return_tokens_as_token_ids`, tokens written as `token_id:N`) so a client can recover what was sampled.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from actors.engines.types import Completion, GenerationRequest
from serve_apps.generate.settings import GenerateSettings
from serve_apps.http import CORS, HTTPError, json_response, read_body
from trajforge.jsjson import JSONRejected, loads_strict


def build_engine(settings: GenerateSettings):
    if settings.engine == "openai":
        from actors.engines.openai_engine import OpenAIEngine

        if not settings.upstream_url:
            raise ValueError("engine openai needs upstream_url")
        return OpenAIEngine(settings.upstream_url, settings.model)
    from actors.engines.factory import model_path
    from actors.engines.transformers_engine import TransformersEngine

    return TransformersEngine(model_path(settings.model), device="cuda" if settings.num_gpus else "cpu")


class ActorsBackend:
    """Requests go to the named GenerationActors; one prompt prefix always to the same actor (prefix cache)."""

    name = "actors"

    def __init__(self) -> None:
        import ray

        from actors.actor import find_actors

        self.actors = find_actors()
        if not self.actors:
            raise RuntimeError("no generation actors: start them with actors.actor.start_actors(settings, named=True)")
        health = ray.get(self.actors[0].health.remote())
        self.model, self.tokenizer = health["model"], None

    async def generate_async(self, requests: list[GenerationRequest]) -> list[Completion]:
        import zlib

        first = requests[0]
        prefix = first.prompt if first.prompt is not None else "".join(m.content for m in first.messages)
        actor = self.actors[zlib.crc32(prefix[:512].encode()) % len(self.actors)]
        return [Completion.model_validate(item) for item in await actor.generate.remote(requests)]

    def health(self) -> dict[str, Any]:
        return {"engine": self.name, "actors": len(self.actors), "model": self.model}


class GenerateService:
    def __init__(self, settings: GenerateSettings, engine: Any = None):
        self.settings = settings
        self.engine = engine or (ActorsBackend() if settings.backend == "actors" else build_engine(settings))
        self.model_name = settings.served_model_name or Path(str(self.engine.model)).name
        self._lock = asyncio.Lock() if settings.backend == "engine" else None

    async def __call__(self, request: Request) -> Response:
        try:
            path = request.url.path.rstrip("/")
            if request.method == "OPTIONS":
                return Response(status_code=204, headers=CORS)
            if path.endswith("/health"):
                return json_response(200, {"ok": True, **self.engine.health()})
            if path.endswith("/v1/models"):
                return json_response(200, {"object": "list", "data": [{"id": self.model_name, "object": "model", "owned_by": "trajforge"}]})
            if request.method != "POST":
                raise HTTPError(405, "method_not_allowed", f"{request.method} is not allowed on {path}; use POST")
            if path.endswith("/v1/chat/completions"):
                return await self.complete(request, chat=True)
            if path.endswith("/v1/completions"):
                return await self.complete(request, chat=False)
            raise HTTPError(404, "not_found", f"no route {path}: use /v1/chat/completions, /v1/completions, /v1/models or /health")
        except HTTPError as exc:
            return json_response(exc.status, {"error": {"message": exc.body["message"], "type": exc.body["error"], "code": exc.status}}, exc.headers)

    def _request(self, body: dict[str, Any], chat: bool) -> GenerationRequest:
        if body.get("model") not in (None, self.model_name):
            raise HTTPError(404, "model_not_found", f"model {body.get('model')!r} is not served here; /v1/models lists {self.model_name!r}")
        if body.get("stream"):
            raise HTTPError(400, "unsupported", "stream=true is not supported; send stream=false")
        if int(body.get("n", 1) or 1) != 1:
            raise HTTPError(400, "unsupported", "n must be 1")
        stop = body.get("stop") or []
        schema = None
        response_format = body.get("response_format") or {}
        if response_format.get("type") == "json_schema":
            schema = (response_format.get("json_schema") or {}).get("schema")
        fields = {"max_tokens": body.get("max_completion_tokens", body.get("max_tokens", 256)), "temperature": body.get("temperature", 1.0),
                  "top_p": body.get("top_p", 1.0), "seed": body.get("seed"), "stop": [stop] if isinstance(stop, str) else stop,
                  "json_schema": schema}
        fields = {key: value for key, value in fields.items() if value is not None}
        if chat:
            fields["messages"] = body.get("messages")
        else:
            prompt = body.get("prompt")
            fields["prompt"] = prompt[0] if isinstance(prompt, list) and len(prompt) == 1 else prompt
        try:
            request = GenerationRequest(**fields)
        except (ValidationError, TypeError) as exc:
            raise HTTPError(400, "invalid_request_error", f"invalid request: {exc}") from None
        if request.max_tokens > self.settings.max_tokens_limit:
            raise HTTPError(400, "invalid_request_error", f"max_tokens {request.max_tokens} is over this server's limit of {self.settings.max_tokens_limit}")
        return request

    async def complete(self, request: Request, chat: bool) -> Response:
        raw = await read_body(request, self.settings.max_body_bytes)
        try:
            body = loads_strict(raw)
        except JSONRejected as exc:
            raise HTTPError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise HTTPError(400, "invalid_request_error", "the body must be a JSON object")
        generation = self._request(body, chat)
        if hasattr(self.engine, "generate_async"):
            completion = (await self.engine.generate_async([generation]))[0]
        else:
            async with self._lock:  # one engine call at a time per replica
                completion = (await asyncio.to_thread(self.engine.generate, [generation]))[0]
        if completion.finish_reason == "error":
            raise HTTPError(500, "generation_failed", completion.error or "the engine failed")
        return json_response(200, self._answer(completion, chat, bool(body.get("return_tokens_as_token_ids"))))

    def _answer(self, completion: Completion, chat: bool, token_ids: bool) -> dict[str, Any]:
        tokenizer = getattr(self.engine, "tokenizer", None)
        names = [f"token_id:{t}" if token_ids or tokenizer is None else tokenizer.decode([t]) for t in completion.token_ids]
        usage = {"prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens,
                 "total_tokens": completion.prompt_tokens + completion.completion_tokens}
        common = {"id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": self.model_name, "usage": usage}
        if chat:
            logprobs = {"content": [{"token": name, "logprob": value, "top_logprobs": []} for name, value in zip(names, completion.logprobs)]}
            choice = {"index": 0, "message": {"role": "assistant", "content": completion.text}, "finish_reason": completion.finish_reason, "logprobs": logprobs}
            return {"object": "chat.completion", "choices": [choice], **common}
        logprobs = {"tokens": names, "token_logprobs": completion.logprobs}
        choice = {"index": 0, "text": completion.text, "finish_reason": completion.finish_reason, "logprobs": logprobs}
        return {"object": "text_completion", "choices": [choice], **common}
