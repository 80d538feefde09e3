"""The embed service over real HTTP: the specification's contract, OpenAI's list form, batching, 400/503."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from trajforge.embedding import MAX_INPUT_CHARS

TEXTS = [f"{topic} {detail}" for topic in ("React hooks", "Terraform plan", "pandas join", "Spring Boot service")
         for detail in ("fix the failing test", "refactor the module", "add a retry with backoff", "document the API")]


def _ready(http, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if http.get("/v1/embed").json()["ready"]:
            return
        time.sleep(0.5)
    raise AssertionError("the embed model did not load")


def _embed(http, payload) -> dict:
    response = http.post("/v1/embed", json=payload)
    assert response.status_code == 200, response.text
    return response.json()


def test_the_specifications_contract(http):
    _ready(http)
    answer = _embed(http, {"input": "React TypeScript frontend development", "model": "sentence-transformers/all-MiniLM-L6-v2"})
    assert answer["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    [item] = answer["data"]
    assert item["index"] == 0 and len(item["embedding"]) == 384
    assert abs(np.linalg.norm(item["embedding"]) - 1.0) < 1e-5


def test_http_vector_equals_the_in_process_one_and_is_deterministic(http, embedder):
    _ready(http)
    text = "Vue single-file component with a Pinia store"
    first = _embed(http, {"input": text})["data"][0]["embedding"]
    second = _embed(http, {"input": text})["data"][0]["embedding"]
    assert first == second
    assert np.allclose(first, embedder.embed([text])[0], atol=1e-5)


def test_list_input_keeps_its_order(http, embedder):
    _ready(http)
    data = _embed(http, {"input": TEXTS})["data"]
    assert [item["index"] for item in data] == list(range(len(TEXTS)))
    assert np.allclose([item["embedding"] for item in data], embedder.embed(TEXTS), atol=1e-5)


def test_order_holds_under_32_concurrent_clients(http, embedder):
    _ready(http)
    expected = embedder.embed(TEXTS)
    shifts = [i % len(TEXTS) for i in range(32)]
    requests = [TEXTS[shift:] + TEXTS[:shift] for shift in shifts]
    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(lambda texts: _embed(http, {"input": texts}), requests))
    for shift, answer in zip(shifts, answers):
        got = np.array([item["embedding"] for item in answer["data"]])
        assert np.allclose(got, np.roll(expected, -shift, axis=0), atol=1e-5), shift


def test_input_is_truncated_to_512_characters(http):
    _ready(http)
    head = "refactor the payment retry loop " * 16
    assert len(head) == MAX_INPUT_CHARS
    long_text, other_tail = head + "and then deploy to kubernetes", head + "completely different ending"
    answer = _embed(http, {"input": [long_text, other_tail, head]})
    vectors = [item["embedding"] for item in answer["data"]]
    assert vectors[0] == vectors[1] == vectors[2]
    assert answer["usage"]["prompt_tokens"] == 3 * len(head.split())  # what was embedded, not what was sent
    assert vectors[0] != _embed(http, {"input": head[:-10]})["data"][0]["embedding"]


def test_truncation_counts_utf16_units_as_javascript_does(http):
    _ready(http)
    head = "deploy the 🙂 service " * 32  # 21 characters, 22 UTF-16 units each
    cut = 0
    while len(head[:cut + 1].encode("utf-16-le")) <= 2 * MAX_INPUT_CHARS:
        cut += 1
    vectors = [item["embedding"] for item in _embed(http, {"input": [head, head[:cut], head[:cut - 1]]})["data"]]
    assert cut < MAX_INPUT_CHARS and vectors[0] == vectors[1] != vectors[2]


@pytest.mark.parametrize("payload, error", [({}, "missing_input"), ({"model": "x"}, "missing_input"), ({"input": 5}, "invalid_input"),
                                            ({"input": ""}, "missing_input"), ({"input": ["a", ""]}, "missing_input"),
                                            ({"input": []}, "invalid_input"), ({"input": ["a", 3]}, "invalid_input"),
                                            ({"input": None}, "missing_input"), ({"input": 0}, "missing_input"), ({"input": False}, "missing_input")])
def test_bad_input_is_400(http, payload, error):
    response = http.post("/v1/embed", json=payload)
    assert response.status_code == 400 and response.json()["error"] == error


def test_a_model_that_cannot_load_answers_503_with_the_reason(http):
    deadline = time.monotonic() + 60
    while not http.get("/broken-embed").json()["error"] and time.monotonic() < deadline:
        time.sleep(0.5)
    response = http.post("/broken-embed", json={"input": "hello"})
    assert response.status_code == 503 and response.json()["error"] == "model_not_ready"
    assert "nonexistent" in response.json()["message"] and "retry-after" not in response.headers  # waiting will not help


def test_503_while_the_model_loads(embedder):
    """The service class built directly, with a loader held back until the test releases it.

    (Once loaded, texts go through Serve's batch queue, which needs a replica: the HTTP tests cover that.)"""
    from starlette.requests import Request

    from serve_apps.embed.service import EmbedService
    from serve_apps.embed.settings import EmbedSettings

    release = threading.Event()

    def slow_loader(settings):
        release.wait(30)
        return embedder

    async def call(service):
        body = b'{"input": "hello"}'

        async def receive():
            return {"type": "http.request", "body": body, "more_body": False}

        scope = {"type": "http", "method": "POST", "path": "/", "headers": [(b"content-length", str(len(body)).encode())], "query_string": b""}
        return await service(Request(scope, receive))

    async def scenario():
        service = EmbedService(EmbedSettings(), loader=slow_loader)
        answer = await call(service)
        assert service.status()["ready"] is False
        release.set()
        while service.embedder is None:
            await asyncio.sleep(0.01)
        return answer, service.status()["ready"]

    answer, ready_after = asyncio.run(scenario())
    assert answer.status_code == 503 and b"still loading" in answer.body and ready_after is True


def test_per_address_limits_answer_429_with_retry_after_as_the_other_routes_do(embedder):
    """The specification's server limits every route per address; the embed app counts its POSTs, per client address."""
    from starlette.requests import Request

    from serve_apps.embed.service import EmbedService
    from serve_apps.embed.settings import EmbedSettings

    never = threading.Event()

    def post(service, client: str):
        body = b'{"input": "hello"}'

        async def receive():
            return {"type": "http.request", "body": body, "more_body": False}

        scope = {"type": "http", "method": "POST", "path": "/", "headers": [(b"content-length", str(len(body)).encode())],
                 "query_string": b"", "client": (client, 40000)}
        return service(Request(scope, receive))

    async def scenario():
        service = EmbedService(EmbedSettings(rate_limits={"per_address_per_minute": 2}), loader=lambda settings: never.wait(30) and embedder)
        return [await post(service, "10.0.0.1") for _ in range(3)] + [await post(service, "10.0.0.2")]

    try:
        answers = asyncio.run(scenario())
    finally:
        never.set()
        for thread in threading.enumerate():  # the loader logs when it ends: inside this test's log capture, not after it
            if thread.name == "embed-model-load":
                thread.join(10)
    assert [answer.status_code for answer in answers] == [503, 503, 429, 503]  # counted before the model's readiness, per address
    refused = json.loads(answers[2].body)
    assert refused["error"] == "rate_limited" and int(answers[2].headers["retry-after"]) == refused["retryAfter"]


def test_openai_sdk_at_the_root_url_gets_embeddings_from_the_embed_app(serve_url, embedder, http):
    """`OpenAI(base_url=<url>/v1)`: the ingest app at `/` forwards `/v1/embeddings` to the embed application."""
    import openai

    _ready(http)
    with openai.OpenAI(base_url=f"{serve_url}/v1", api_key="unused", max_retries=0, timeout=60) as client:
        answer = client.embeddings.create(model="all-MiniLM-L6-v2", input=TEXTS[:3])
        assert np.allclose([item.embedding for item in answer.data], embedder.embed(TEXTS[:3]), atol=1e-5)
        with pytest.raises(openai.BadRequestError) as refused:
            client.embeddings.create(model="all-MiniLM-L6-v2", input="")
    assert "empty" in refused.value.body["message"]


def test_head_answers_like_get_and_a_wrong_method_names_the_allowed_ones(http):
    head = http.head("/v1/embed")
    assert head.status_code == 200 and head.content == b"" and head.headers["content-type"] == "application/json"
    wrong = http.put("/v1/embed", json={"input": "x"})
    assert wrong.status_code == 405 and wrong.headers["allow"] == "GET, HEAD, POST"


def test_openai_errors_name_the_parameter_and_token_ids_are_refused_saying_why(serve_url, http):
    """OpenAI's SDKs (and LangChain's OpenAIEmbeddings, which sends token ids by default) read `param` of an error."""
    import openai

    _ready(http)
    with openai.OpenAI(base_url=f"{serve_url}/v1", api_key="unused", max_retries=0, timeout=60) as client:
        for kwargs, param in [({"input": [[101, 2023], [2003]]}, "input"), ({"input": [7, 8, 9]}, "input"), ({"input": ""}, "input"),
                              ({"input": "a", "dimensions": 256}, "dimensions"), ({"input": "a", "encoding_format": "int8"}, "encoding_format")]:
            with pytest.raises(openai.BadRequestError) as refused:
                client.embeddings.create(model="all-MiniLM-L6-v2", **kwargs)
            assert refused.value.body["param"] == param, (kwargs, refused.value.body)
    assert "token ids" in refused_message(http, {"input": [[101, 2023]]}) and "token ids" not in refused_message(http, {"input": ["a", 1]})


def refused_message(http, payload) -> str:
    response = http.post("/v1/embed", json=payload)
    assert response.status_code == 400 and response.json()["param"] == "input"
    return response.json()["message"]


def test_a_one_text_request_is_not_held_behind_a_long_list(http):
    """A request of 2048 texts puts two model calls' worth in the batch queue at a time: a one-text request sent while it
    runs is answered after a few calls, not after all 2048 texts (the specification's tagger gives up after 10 s)."""
    _ready(http)
    embedded = lambda: http.get("/v1/embed").json()["texts_embedded"]  # noqa: E731
    long_list = [f"refactor the payment retry loop, step {index}" for index in range(2048)]
    before = embedded()
    with ThreadPoolExecutor(1) as pool:
        big = pool.submit(_embed, http, {"input": long_list})
        deadline = time.monotonic() + 120
        while embedded() == before:  # the long list is being embedded
            assert time.monotonic() < deadline and not big.done()
            time.sleep(0.02)
        _embed(http, {"input": "health check"})
        done_meanwhile = embedded() - before
        assert len(big.result()["data"]) == 2048
    assert done_meanwhile < len(long_list) / 2, done_meanwhile
