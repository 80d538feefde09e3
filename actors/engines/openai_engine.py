"""The `openai` engine: any OpenAI-compatible endpoint (a vLLM server, a teacher's cloud, our own front).

Chat requests go to `/v1/chat/completions`, prompts to `/v1/completions`, with at most `concurrency`
in flight. Connection errors, timeouts, 429 and 5xx are retried with exponential backoff and jitter
(honouring `Retry-After`, in seconds or as an HTTP date; one asking for a wait longer than `timeout_s` ends the
retries with its reason, rather than holding the request past its timeout); other 4xx fail that request alone.
Log-probabilities are requested, and with `token_ids_in_logprobs` (vLLM's `return_tokens_as_token_ids`) the exact token ids come back too.
A choice's `stop_reason` (vLLM's server and our front send it) says whether a stop string or the end of
text ended the answer; without it (OpenAI's own) a completion's `stop_reason_known` is False.
A request's `prompt_logprobs` is asked of `/v1/completions` as `echo` with `logprobs` (vLLM's server and our front
answer it) and split back off the answer; chat has no echo, so there it is refused. A chat request's `tools` are sent on;
the calls an upstream answers with come back in the text in the Hermes form (`hermes.py`), and its split-off reasoning
in `<think>` before the content, as a local model writes them (the actor loop reads the thought from there).
An upstream that refuses a parameter as unsupported by its model (OpenAI's reasoning models refuse `max_tokens`,
`temperature`, `top_p`, `logprobs`, `stop`: `unsupported_parameter`/`unsupported_value` naming it) gets the request
again without it (`max_tokens` as `max_completion_tokens`), and every later one too, with one warning naming what it
lost; stops are still cut here. What shapes the answer (messages, prompt, tools, a schema) is never dropped.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from actors.engines.hermes import calls_text
from actors.engines.types import Completion, GenerationRequest, InvalidRequest, check_output, cut_at_stop, sampling_extras
from trajforge.client.errors import header_retry_after

RETRYABLE = {408, 409, 425, 429, 500, 502, 503, 504}
# what an upstream may refuse for its model and the request still means the same (stops are cut here, the sampling
# settings fall back to the upstream's defaults, log-probabilities are left empty)
DROPPABLE = {"max_tokens", "max_completion_tokens", "temperature", "top_p", "seed", "stop", "logprobs", "top_logprobs",
             "presence_penalty", "frequency_penalty", "include_stop_str_in_output", "return_tokens_as_token_ids"}
log = logging.getLogger(__name__)


class TimedOut(RuntimeError):
    """Every attempt timed out: the Completion's `timed_out`."""


class OpenAIEngine:
    name = "openai"
    serves_here = False  # the model runs upstream: restarting the process that holds this client mends nothing there

    def __init__(self, base_url: str, model: str, *, api_key_env: str | None = "OPENAI_API_KEY", timeout_s: float = 120.0,
                 max_retries: int = 4, backoff_s: float = 0.5, concurrency: int = 8, token_ids_in_logprobs: bool = False,
                 continue_final_message: bool = False, transport: Any = None, before_retry: Any = None):
        """`before_retry`: called before each request sent again (a retry, or a resend without a refused parameter),
        e.g. a rate limiter's acquire, so that retries count against the caller's limit as first attempts do."""
        import httpx

        self.base_url = base_url.rstrip("/").removesuffix("/v1")
        self.model = model
        self.max_retries, self.backoff_s, self.timeout_s = max_retries, backoff_s, timeout_s
        self.before_retry = before_retry
        self.token_ids_in_logprobs = token_ids_in_logprobs
        self.continue_final_message = continue_final_message
        headers = {"Authorization": f"Bearer {os.environ[api_key_env]}"} if api_key_env and os.environ.get(api_key_env) else {}
        self.api_key_env, self.sends_key = api_key_env, bool(headers)
        self.client = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout_s, transport=transport,
                                   limits=httpx.Limits(max_connections=concurrency))
        self.pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="openai-engine")
        self.refused: set[str] = set()  # parameters the upstream said its model does not support
        self._refused_lock = threading.Lock()

    def _key_said(self) -> str:
        """What an upstream's 401/403 most likely means for the key this client sends."""
        if self.sends_key:
            return f"it refused the key in ${self.api_key_env}"
        if not self.api_key_env:
            return "no API key was sent (api_key_env is null): name the variable that holds one"
        return (f"no API key was sent: ${self.api_key_env} is not set in this process (export it before starting; in a job, "
                f"give it in `ray job submit --runtime-env-json '{{\"env_vars\": {{\"{self.api_key_env}\": ...}}}}'`)")

    def _without_refused(self, body: dict[str, Any]) -> dict[str, Any]:
        """`body` without the parameters the upstream refused; `max_tokens` renamed `max_completion_tokens`."""
        body = {name: value for name, value in body.items() if name not in self.refused or name == "max_tokens"}
        if "max_tokens" in self.refused and "max_tokens" in body:
            limit = body.pop("max_tokens")
            if "max_completion_tokens" not in self.refused:
                body["max_completion_tokens"] = limit
        return body

    def _learn_refusal(self, response: Any, body: dict[str, Any]) -> bool:
        """True when `response` is a 400 refusing one of `body`'s droppable parameters as unsupported (now remembered)."""
        try:
            error = response.json().get("error") or {}
        except ValueError:
            return False
        if not isinstance(error, dict):
            return False
        param, message = error.get("param"), str(error.get("message") or "")
        unsupported = error.get("code") in ("unsupported_parameter", "unsupported_value") or message.startswith("Unsupported ")
        if not (unsupported and isinstance(param, str) and param in body and param in DROPPABLE):
            return False
        with self._refused_lock:
            if param not in self.refused:
                self.refused.add(param)
                log.warning("%s refuses %r for model %s (%s): sending every request without it%s", self.base_url, param,
                            self.model, message[:200], " (as max_completion_tokens)" if param == "max_tokens" else "")
        return True

    def _body(self, request: GenerationRequest) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {"model": self.model, "max_tokens": request.max_tokens, "temperature": request.temperature,
                                "top_p": request.top_p}
        if request.seed is not None:
            body["seed"] = request.seed
        body.update(sampling_extras(request))  # only what changes the sampling: an upstream may not know vLLM's extras
        if request.stop:
            body["stop"] = request.stop
            if request.include_stop_str_in_output:  # vLLM's, sent only when asked (an upstream may not know it)
                body["include_stop_str_in_output"] = True
        structured = request.structured_output
        if structured is not None and structured.json_schema is None:  # vLLM's, sent only when set (OpenAI's has no such)
            body["structured_outputs"] = {"regex": structured.regex} if structured.regex is not None else {"choice": structured.choice}
        if request.json_schema is not None:  # on completions too: vLLM's server takes it there (OpenAI's refuses, not ignores)
            _check_schema(request.json_schema)  # refused here, as the local engines refuse it, not sent to be refused
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": "output", "schema": request.json_schema}}
        if self.token_ids_in_logprobs:
            body["return_tokens_as_token_ids"] = True
        if request.messages is not None:
            if request.prompt_logprobs is not None:
                raise InvalidRequest("prompt_logprobs on chat is not supported by the openai engine: OpenAI's chat completions "
                                     "have no echo; send a prompt (completions) instead")
            body.update(messages=[m.model_dump() for m in request.messages], logprobs=True)
            if request.top_logprobs:
                body["top_logprobs"] = request.top_logprobs
            if request.continue_final_message and self.continue_final_message:  # else the upstream answers in a new turn
                body.update(continue_final_message=True, add_generation_prompt=False)
            elif not request.add_generation_prompt:
                body["add_generation_prompt"] = False
            if request.chat_template_kwargs is not None:  # vLLM's, sent only when set (an upstream may not know it)
                body["chat_template_kwargs"] = request.chat_template_kwargs
            if request.tools:
                body["tools"] = request.tools
            return "/v1/chat/completions", body
        body.update(prompt=request.prompt if request.prompt is not None else request.prompt_token_ids,
                    logprobs=max(1, request.top_logprobs, request.prompt_logprobs or 0))
        if request.prompt_logprobs is not None:  # the prompt's tokens come back first, their log-probabilities with them
            body["echo"] = True
        return "/v1/completions", body

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        import httpx

        attempt, resend = 0, False
        while True:
            if resend and self.before_retry is not None:
                self.before_retry()
            resend = True
            delay = self.backoff_s * 2**attempt * (0.5 + random.random())
            sent = self._without_refused(body)
            try:
                response = self._send(path, sent)
            except (httpx.TransportError, httpx.TimeoutException) as exc:
                if attempt == self.max_retries:
                    failure = TimedOut if isinstance(exc, httpx.TimeoutException) else RuntimeError
                    raise failure(f"{self.base_url}{path} unreachable after {attempt + 1} attempts: {exc}") from None
                time.sleep(delay)
                attempt += 1
                continue
            if response.status_code == 200:
                return self._answer(path, response)
            if response.status_code == 400 and self._learn_refusal(response, sent):
                continue  # at most once per droppable parameter: each refusal is remembered
            if response.status_code in (400, 404, 413, 422):
                raise InvalidRequest(f"{self.base_url}{path} answered {response.status_code}: {response.text[:300]}")
            if response.status_code in (401, 403):
                raise RuntimeError(f"{self.base_url}{path} answered {response.status_code}: {response.text[:300]}; {self._key_said()}")
            if response.status_code not in RETRYABLE or attempt == self.max_retries:
                raise RuntimeError(f"{self.base_url}{path} answered {response.status_code}: {response.text[:300]}")
            retry_after = header_retry_after(response.headers)
            if retry_after is not None and retry_after > self.timeout_s:  # a wait longer than a whole attempt may take
                raise RuntimeError(f"{self.base_url}{path} answered {response.status_code} asking to retry after {retry_after:.0f} s, "
                                   f"longer than the {self.timeout_s:g} s timeout: {response.text[:300]}")
            time.sleep(delay if retry_after is None else retry_after)
            attempt += 1

    def _send(self, path: str, body: dict[str, Any]) -> Any:
        """One attempt, its whole answer read within about `timeout_s`: httpx's timeouts bound each read, not the
        answer, so an upstream that drips its body would hold the request far past its timeout."""
        import httpx

        deadline = time.monotonic() + self.timeout_s
        with self.client.stream("POST", path, json=body) as response:
            content = bytearray()
            for chunk in response.iter_bytes():  # decoded: the answer below is given without its content-encoding
                content += chunk
                if time.monotonic() > deadline:
                    raise httpx.ReadTimeout(f"the answer took longer than the {self.timeout_s:g} s timeout", request=response.request)
        headers = [(name, value) for name, value in response.headers.multi_items()
                   if name.lower() not in ("content-encoding", "content-length", "transfer-encoding")]
        return httpx.Response(response.status_code, headers=headers, content=bytes(content), request=response.request)

    def _answer(self, path: str, response: Any) -> dict[str, Any]:
        """A 200's completion; RuntimeError naming the endpoint for a body that is not JSON or holds no choice."""
        try:
            answer = response.json()
        except ValueError:
            raise RuntimeError(f"{self.base_url}{path} answered 200 with a body that is not JSON: {response.text[:200]!r}") from None
        choices = answer.get("choices") if isinstance(answer, dict) else None
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise RuntimeError(f"{self.base_url}{path} answered 200 without a choice: {response.text[:300]}")
        return answer

    @staticmethod
    def _tokens(choice: dict[str, Any], chat: bool, top: int) -> tuple[list[int], list[float], list[list[tuple[int, float]]]]:
        """The sampled token ids, their log-probabilities and, when asked, the alternatives: ids only where the
        upstream names tokens `token_id:N` (vLLM's `return_tokens_as_token_ids`), else none."""
        logprobs = choice.get("logprobs") or {}
        if chat:
            entries = logprobs.get("content") or []
            tokens, values = [e.get("token", "") for e in entries], [e.get("logprob", 0.0) for e in entries]
            alternatives = [[(a.get("token"), a.get("logprob")) for a in e.get("top_logprobs") or []] for e in entries]
        else:
            tokens, values = logprobs.get("tokens") or [], logprobs.get("token_logprobs") or []
            alternatives = [list((position or {}).items()) for position in logprobs.get("top_logprobs") or []]
        ids = [_token_id(t) for t in tokens]
        tops = [_likeliest(position, top) for position in alternatives] if top else []
        return ([] if None in ids else ids), [float(v) for v in values if v is not None], tops if len(tops) == len(tokens) else []

    def _one(self, request: GenerationRequest) -> Completion:
        started, path = time.perf_counter(), ""
        try:
            path, body = self._body(request)
            answer = self._post(path, body)
            choice = answer["choices"][0]
            chat = request.messages is not None
            usage = answer.get("usage") or {}
            scored: dict[str, Any] = {}
            if request.prompt_logprobs is not None:
                choice, scored = _split_echo(request, choice, usage.get("prompt_tokens", 0))
            answered = _chat_text(choice.get("message") or {}) if chat else choice.get("text", "")
            text, cut = cut_at_stop(answered, request.stop, keep=request.include_stop_str_in_output)
            token_ids, logprobs, top = self._tokens(choice, chat, request.top_logprobs)
            if cut is not None:  # a stop the upstream did not honour: its tokens go on past it
                sampled = _through_stop(_token_bytes(choice, chat), answered, answered.find(cut) + len(cut))
                token_ids, logprobs, top = token_ids[:sampled], logprobs[:sampled], top[:sampled]
            # vLLM's server (and our front) says what ended the answer in `stop_reason`; OpenAI's says only "stop"
            known = "stop_reason" in choice or cut is not None
            return Completion(
                text=text, token_ids=token_ids, logprobs=logprobs, top_logprobs=top,
                finish_reason="length" if choice.get("finish_reason") == "length" or request.max_tokens == 0 else "stop",
                stop_reason=cut if cut is not None else choice.get("stop_reason"), stop_reason_known=known,
                prompt_tokens=usage.get("prompt_tokens", 0), completion_tokens=usage.get("completion_tokens", len(token_ids)),
                model=answer.get("model", self.model), engine=self.name, schema_valid=check_output(text, request.structured_output),
                ignored=sorted(name for name in self.refused if name in body  # max_tokens renamed, not dropped
                               and (name != "max_tokens" or "max_completion_tokens" in self.refused)),
                latency_s=round(time.perf_counter() - started, 4), request_id=request.request_id, **scored,
            )
        except (RuntimeError, KeyError, IndexError, ValueError, TypeError, AttributeError) as exc:
            error = str(exc) if isinstance(exc, (RuntimeError, ValueError)) else \
                f"{self.base_url}{path} answered a choice this engine cannot read ({type(exc).__name__}: {exc})"
            return Completion(text="", finish_reason="error", error=error, model=self.model, engine=self.name,
                              invalid_request=isinstance(exc, InvalidRequest), timed_out=isinstance(exc, TimedOut),
                              latency_s=round(time.perf_counter() - started, 4), request_id=request.request_id)

    def generate(self, requests: list[GenerationRequest]) -> list[Completion]:
        return list(self.pool.map(self._one, requests))

    def health(self) -> dict[str, Any]:
        try:
            response = self.client.get("/v1/models", timeout=10)
            return {"engine": self.name, "model": self.model, "ok": response.status_code == 200, "status": response.status_code}
        except Exception as exc:
            return {"engine": self.name, "model": self.model, "ok": False, "error": str(exc)}

    def close(self) -> None:
        self.pool.shutdown(wait=False)
        self.client.close()


def _check_schema(schema: dict[str, Any]) -> None:
    """InvalidRequest, worded as the local engines word it, for a schema that is not a JSON Schema (its metaschema's)."""
    import jsonschema

    if not isinstance(schema.get("$schema", ""), str):
        raise InvalidRequest("json_schema is not usable: its $schema must be a URI (a string)")
    try:  # an unknown $schema is read as the latest draft, as llguidance ignores it
        jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise InvalidRequest(f"json_schema is not usable: {exc.message}") from None


def _chat_text(message: dict[str, Any]) -> str:
    """A chat answer's text as a local model writes it: the reasoning an upstream's reasoning parser split off (vLLM's
    `reasoning`, earlier `reasoning_content`) back in `<think>` before it, its tool calls after it in the Hermes form."""
    text, calls = message.get("content") or "", message.get("tool_calls")
    reasoning = message.get("reasoning") or message.get("reasoning_content")
    thought = f"<think>{reasoning}</think>" if isinstance(reasoning, str) and reasoning else ""
    return thought + text + (calls_text(calls) if calls else "")


def _token_bytes(choice: dict[str, Any], chat: bool) -> list[int] | None:
    """Each sampled token's length in UTF-8 bytes (a chat entry's `bytes`, else its text); None when a token is named
    only by its id."""
    logprobs = choice.get("logprobs") or {}
    entries = (logprobs.get("content") or []) if chat else [{"token": token} for token in logprobs.get("tokens") or []]
    sizes = []
    for entry in entries:
        if isinstance(entry.get("bytes"), list):
            sizes.append(len(entry["bytes"]))
        elif isinstance(entry.get("token"), str) and _token_id(entry["token"]) is None:
            sizes.append(len(entry["token"].encode()))
        else:
            return None
    return sizes


def _through_stop(sizes: list[int] | None, answered: str, end: int) -> int:
    """How many sampled tokens to keep when the text was cut at a stop ending at character `end`: those through the
    one that completes the stop (as vLLM keeps a stop's tokens though its text leaves the stop out), or none when the
    tokens do not spell the answer, so the ids and log-probabilities never describe text the completion lacks."""
    if not sizes or sum(sizes) != len(answered.encode()):
        return 0
    wanted, total = len(answered[:end].encode()), 0
    for count, size in enumerate(sizes, 1):
        total += size
        if total >= wanted:
            return count
    return len(sizes)


def _token_id(name: Any) -> int | None:
    """N of a token named `token_id:N`; None for a token given as text."""
    if isinstance(name, str) and name.startswith("token_id:") and name[9:].lstrip("-").isdigit():
        return int(name[9:])
    return None


def _likeliest(named: Any, top: int) -> list[tuple[int, float]]:
    """The `top` likeliest of (token name, log-probability) pairs as (id, log-probability), the likeliest first: only
    tokens named `token_id:N` (the others' ids are unknown) with a log-probability."""
    ranked = ((_token_id(name), float(value)) for name, value in named if _token_id(name) is not None and value is not None)
    return sorted(ranked, key=lambda pair: -pair[1])[:top]


def _split_echo(request: GenerationRequest, choice: dict[str, Any], prompt_tokens: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """An echoed completions choice as the sampled part alone, and the Completion's prompt fields: the first
    `prompt_tokens` entries of its logprobs are the prompt's (the first one's null), its text starts with the prompt."""
    logprobs = choice.get("logprobs") or {}
    names, values = logprobs.get("tokens") or [], logprobs.get("token_logprobs") or []
    if not prompt_tokens or len(names) < prompt_tokens or len(values) < prompt_tokens:
        raise RuntimeError("the upstream echoed no log-probabilities for the prompt (it may not support echo with logprobs)")
    alternatives = logprobs.get("top_logprobs") or [None] * len(names)
    offsets = logprobs.get("text_offset") or []
    text = choice.get("text", "")
    if request.prompt is not None and text.startswith(request.prompt):
        answer_text = text[len(request.prompt):]
    else:  # a token-id prompt: the answer starts where its first token's text does
        answer_text = text[offsets[prompt_tokens]:] if len(offsets) > prompt_tokens else ""
    ids = [_token_id(name) for name in names[:prompt_tokens]]
    prompt_ids = request.prompt_token_ids or ([] if None in ids else ids)
    tops = [None if position is None else _likeliest(position.items(), request.prompt_logprobs)
            for position in alternatives[:prompt_tokens]]
    rest = {"logprobs": {key: (value[prompt_tokens:] if isinstance(value, list) else value) for key, value in logprobs.items()}}
    return {**choice, **rest, "text": answer_text}, {
        "prompt_token_ids": prompt_ids, "prompt_logprobs": [None if v is None else float(v) for v in values[:prompt_tokens]],
        "prompt_top_logprobs": [None, *tops[1:]]}
