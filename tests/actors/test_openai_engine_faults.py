"""The openai engine against requests that cannot be served and upstreams that answer badly: a bad request fails
before anything is sent, and an answer that is not a completion fails its request alone, naming the endpoint."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from pydantic import ValidationError

from actors.engines.openai_engine import OpenAIEngine
from actors.engines.types import GenerationRequest

CHAT = [{"role": "user", "content": "hi"}]


def engine_answering(answer, sent: list[dict]) -> OpenAIEngine:
    """An engine whose upstream records each body it is sent and answers `answer(body)` (an httpx.Response)."""
    def upstream(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return answer(sent[-1])
    return OpenAIEngine("http://upstream:8000/v1", "m", api_key_env=None, max_retries=0,
                        transport=httpx.MockTransport(upstream))


def test_empty_messages_are_refused_when_the_request_is_made():
    with pytest.raises(ValidationError, match="messages"):
        GenerationRequest(messages=[])


@pytest.mark.parametrize("schema", [{"type": "no-such-type"}, {"type": "object", "properties": 5},
                                    {"type": "object", "required": True}, {"type": "string", "pattern": "(("},
                                    {"$schema": ["x"], "type": "object"}])
def test_a_schema_that_is_not_a_json_schema_fails_alone_before_anything_is_sent(schema):
    sent: list[dict] = []
    engine = engine_answering(lambda body: httpx.Response(200, json={"choices": [{"message": {"content": "{}"}}]}), sent)
    try:
        bad, good = engine.generate([GenerationRequest(messages=CHAT, json_schema=schema),
                                     GenerationRequest(messages=CHAT, json_schema={"type": "object"})])
    finally:
        engine.close()
    assert bad.finish_reason == "error" and bad.invalid_request and "json_schema is not usable" in bad.error, bad
    assert good.error is None and good.schema_valid is True
    assert len(sent) == 1 and sent[0]["response_format"]["json_schema"]["schema"] == {"type": "object"}


def test_a_schema_of_an_earlier_draft_is_sent():
    sent: list[dict] = []
    engine = engine_answering(lambda body: httpx.Response(200, json={"choices": [{"message": {"content": "{}"}}]}), sent)
    schema = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "dependencies": {"a": ["b"]}}
    try:
        [answer] = engine.generate([GenerationRequest(messages=CHAT, json_schema=schema)])
    finally:
        engine.close()
    assert answer.error is None and sent[0]["response_format"]["json_schema"]["schema"] == schema


@pytest.mark.parametrize("answer, words", [
    (httpx.Response(200, content=b'{"choices": [ {"message": '), "not JSON"),
    (httpx.Response(200, json=[1, 2]), "without a choice"),
    (httpx.Response(200, json={"model": "m"}), "without a choice"),
    (httpx.Response(200, json={"choices": []}), "without a choice"),
    (httpx.Response(200, json={"choices": ["oops"]}), "without a choice"),
    (httpx.Response(200, json={"choices": [{"message": "oops"}]}), "cannot read"),
])
def test_an_answer_that_is_not_a_completion_fails_its_request_alone_naming_the_endpoint(answer, words):
    sent: list[dict] = []
    good = httpx.Response(200, json={"choices": [{"message": {"content": "fine"}, "finish_reason": "stop"}]})
    engine = engine_answering(lambda body: answer if body["messages"][0]["content"] == "bad" else good, sent)
    try:
        bad, fine = engine.generate([GenerationRequest(messages=[{"role": "user", "content": "bad"}]),
                                     GenerationRequest(messages=CHAT)])
    finally:
        engine.close()
    assert bad.finish_reason == "error" and "http://upstream:8000/v1/chat/completions" in bad.error and words in bad.error, bad.error
    assert fine.error is None and fine.text == "fine"


def overloaded_once(retry_after: str):
    """An upstream answering 429 with this Retry-After to the first request, then a completion."""
    def answer(body: dict) -> httpx.Response:
        if answer.calls == 0:
            answer.calls += 1
            return httpx.Response(429, headers={"Retry-After": retry_after}, json={"error": {"message": "slow down"}})
        return httpx.Response(200, json={"choices": [{"message": {"content": "fine"}, "finish_reason": "stop"}]})
    answer.calls = 0
    return answer


def test_retry_after_as_an_http_date_is_honoured(monkeypatch):
    from email.utils import formatdate

    waits: list[float] = []
    monkeypatch.setattr("actors.engines.openai_engine.time.sleep", waits.append)
    sent: list[dict] = []
    engine = engine_answering(overloaded_once(formatdate(time.time() + 30, usegmt=True)), sent)
    engine.max_retries = 1
    try:
        [answer] = engine.generate([GenerationRequest(messages=CHAT)])
    finally:
        engine.close()
    assert answer.text == "fine" and len(sent) == 2 and len(waits) == 1 and 25 < waits[0] <= 30, waits


def test_a_retry_after_longer_than_the_timeout_ends_the_retries_with_its_reason(monkeypatch):
    waits: list[float] = []
    monkeypatch.setattr("actors.engines.openai_engine.time.sleep", waits.append)
    sent: list[dict] = []
    engine = engine_answering(overloaded_once("3600"), sent)
    engine.max_retries, engine.timeout_s = 3, 5.0
    try:
        [answer] = engine.generate([GenerationRequest(messages=CHAT)])
    finally:
        engine.close()
    assert answer.finish_reason == "error" and len(sent) == 1 and waits == []
    assert "http://upstream:8000/v1/chat/completions answered 429 asking to retry after 3600 s" in answer.error, answer.error


class DrippedBody(httpx.SyncByteStream):
    """A completion's body sent a few bytes at a time, each well within a read timeout, the whole past it."""

    def __iter__(self):
        body = json.dumps({"choices": [{"message": {"content": "late"}, "finish_reason": "stop"}]}).encode()
        for start in range(0, len(body), 8):
            time.sleep(0.1)
            yield body[start:start + 8]


def test_the_timeout_bounds_an_answer_dripped_slower_than_it():
    sent: list[dict] = []
    engine = engine_answering(lambda body: httpx.Response(200, stream=DrippedBody()), sent)
    engine.timeout_s = 0.3
    started = time.monotonic()
    try:
        [answer] = engine.generate([GenerationRequest(messages=CHAT)])
    finally:
        engine.close()
    assert time.monotonic() - started < 1.0 and answer.finish_reason == "error"
    assert "took longer than the 0.3 s timeout" in answer.error and "http://upstream:8000" in answer.error, answer.error


def test_a_request_whose_every_attempt_timed_out_says_so():
    def upstream(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    engine = OpenAIEngine("http://upstream:8000/v1", "m", api_key_env=None, max_retries=1, backoff_s=0,
                          transport=httpx.MockTransport(upstream))
    refused = OpenAIEngine("http://upstream:8000/v1", "m", api_key_env=None, max_retries=0, backoff_s=0,
                           transport=httpx.MockTransport(lambda request: httpx.Response(503, json={})))
    try:
        [timed_out] = engine.generate([GenerationRequest(messages=CHAT)])
        [unavailable] = refused.generate([GenerationRequest(messages=CHAT)])
    finally:
        engine.close()
        refused.close()
    assert timed_out.finish_reason == "error" and timed_out.timed_out and "unreachable after 2 attempts" in timed_out.error
    assert unavailable.finish_reason == "error" and not unavailable.timed_out


def _chat_logprobs(tokens: list[str], ids: bool = False, with_bytes: bool = False) -> dict:
    """Chat logprobs for `tokens`: named by their text, or as `token_id:N` (vLLM's ids, N from 5), with their bytes."""
    return {"content": [{"token": f"token_id:{5 + i}" if ids else t, "logprob": -0.1 * (i + 1),
                         **({"bytes": list(t.encode())} if with_bytes else {})} for i, t in enumerate(tokens)]}


SAMPLED = ["ok", " <", "/act", "ion>", " more", " text"]


@pytest.mark.parametrize("logprobs, kept", [
    (_chat_logprobs(SAMPLED), 4),  # through the token that completes the stop
    (_chat_logprobs(SAMPLED, ids=True, with_bytes=True), 4),  # named by ids, sized by their bytes
    (_chat_logprobs(SAMPLED, ids=True), 0),  # ids without bytes: nothing says which tokens the text kept
    (_chat_logprobs(["ok", " </action>"]), 0),  # tokens that do not spell the answer
])
def test_a_stop_the_upstream_ignored_cuts_the_tokens_with_the_text(logprobs, kept):
    """An upstream that does not honour `stop` (OpenAI's reasoning models, some proxies) answers past it; the text is
    cut here, and the ids and log-probabilities must not go on describing the text after it."""
    answer = {"choices": [{"message": {"content": "ok </action> more text"}, "finish_reason": "stop", "logprobs": logprobs}]}
    engine = engine_answering(lambda body: httpx.Response(200, json=answer), [])
    try:
        [done] = engine.generate([GenerationRequest(messages=CHAT, stop=["</action>"])])
    finally:
        engine.close()
    assert (done.text, done.stop_reason) == ("ok ", "</action>")
    assert len(done.logprobs) == kept and done.logprobs == [entry["logprob"] for entry in logprobs["content"][:kept]]
    assert done.token_ids == ([5, 6, 7, 8] if kept and logprobs["content"][0]["token"].startswith("token_id:") else [])


@pytest.mark.parametrize("key_env, environment, said", [
    ("TEACHER_API_KEY", {}, "$TEACHER_API_KEY is not set in this process"),
    ("TEACHER_API_KEY", {"TEACHER_API_KEY": "sk-wrong"}, "it refused the key in $TEACHER_API_KEY"),
    (None, {}, "api_key_env is null"),
])
def test_a_401_says_whether_a_key_was_sent_and_from_which_variable(monkeypatch, key_env, environment, said):
    monkeypatch.delenv("TEACHER_API_KEY", raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    authorizations: list[str | None] = []

    def upstream(request: httpx.Request) -> httpx.Response:
        authorizations.append(request.headers.get("authorization"))
        return httpx.Response(401, json={"error": {"message": "Incorrect API key provided"}})

    engine = OpenAIEngine("http://upstream:8000/v1", "m", api_key_env=key_env, max_retries=3, transport=httpx.MockTransport(upstream))
    try:
        [answer] = engine.generate([GenerationRequest(messages=CHAT)])
    finally:
        engine.close()
    assert answer.finish_reason == "error" and "answered 401" in answer.error and said in answer.error, answer.error
    assert authorizations == [f"Bearer {environment['TEACHER_API_KEY']}" if environment else None]  # not retried


def test_before_retry_is_called_before_each_request_sent_again_and_not_before_the_first(monkeypatch):
    """A caller's rate limiter (the teacher's) sees every retry, so the endpoint gets no more requests than its limit."""
    monkeypatch.setattr("actors.engines.openai_engine.time.sleep", lambda seconds: None)
    events: list[str] = []

    def upstream(request: httpx.Request) -> httpx.Response:
        events.append("send")
        if events.count("send") <= 2:
            return httpx.Response(429 if events.count("send") == 1 else 503, json={"error": {"message": "busy"}})
        return httpx.Response(200, json={"choices": [{"message": {"content": "fine"}, "finish_reason": "stop"}]})

    engine = OpenAIEngine("http://upstream:8000/v1", "m", api_key_env=None, max_retries=3, transport=httpx.MockTransport(upstream),
                          before_retry=lambda: events.append("wait"))
    try:
        [answer] = engine.generate([GenerationRequest(messages=CHAT)])
    finally:
        engine.close()
    assert answer.text == "fine" and events == ["send", "wait", "send", "wait", "send"]
