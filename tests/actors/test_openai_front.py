"""The generate front through OpenAI's own Python SDK: what an external tool sends, answered as OpenAI does.

Every answer is compared with the same request run on the model in this process, so the front's
parsing (roles, content parts, n, prompt lists, stops) and its streaming are checked against the
engine, not against fixed strings.
"""

from __future__ import annotations

import base64
import json
import time

import httpx
import numpy as np
import openai
import pytest

from actors.engines.types import GenerationRequest

MESSAGES = [{"role": "developer", "content": "answer in one line"},
            {"role": "user", "content": [{"type": "text", "text": "rename fetch_user "}, {"type": "text", "text": "to load_user"}]}]
AS_ENGINE = [{"role": "system", "content": "answer in one line"}, {"role": "user", "content": "rename fetch_user to load_user"}]


@pytest.fixture(scope="module")
def client(front_url):
    with openai.OpenAI(base_url=f"{front_url}/v1", api_key="unused", max_retries=0, timeout=120) as sdk:
        yield sdk


def test_chat_with_developer_role_and_text_parts_matches_the_engine(client, engine):
    answer = client.chat.completions.create(model="small", messages=MESSAGES, max_tokens=12, temperature=0.8, seed=3, logprobs=True)
    (local,) = engine.generate([GenerationRequest(messages=AS_ENGINE, max_tokens=12, temperature=0.8, seed=3)])
    (choice,) = answer.choices
    assert answer.object == "chat.completion" and answer.model == "small"
    assert choice.message.role == "assistant" and choice.message.content == local.text
    assert [entry.logprob for entry in choice.logprobs.content] == pytest.approx(local.logprobs, abs=1e-5)
    assert answer.usage.completion_tokens == local.completion_tokens and answer.usage.prompt_tokens == local.prompt_tokens


def test_unset_sampling_options_take_openais_defaults(client, engine):
    """OpenAI samples at temperature 1 when a request names none; the engines' own default is lower."""
    for seed in range(6, 16):  # a seed whose samples at the two temperatures differ (the small model may be peaked)
        openai_default, engine_default = engine.generate([GenerationRequest(prompt="def main(", max_tokens=48, seed=seed, temperature=1.0),
                                                          GenerationRequest(prompt="def main(", max_tokens=48, seed=seed)])
        if openai_default.token_ids != engine_default.token_ids:
            break
    assert openai_default.token_ids != engine_default.token_ids, "no seed tells the two temperatures apart"
    answer = client.completions.create(model="small", prompt="def main(", max_tokens=48, seed=seed)
    assert answer.choices[0].text == openai_default.text


def test_a_completion_without_max_tokens_is_as_long_as_openais_sixteen(client, engine):
    answer = client.completions.create(model="small", prompt="def main(", seed=4, temperature=1.0)
    (local,) = engine.generate([GenerationRequest(prompt="def main(", max_tokens=16, seed=4, temperature=1.0)])
    assert answer.choices[0].text == local.text and answer.usage.completion_tokens == local.completion_tokens <= 16


def test_streamed_chat_joins_to_the_unstreamed_answer_and_ends_with_usage(client):
    options = {"model": "small", "messages": MESSAGES, "max_tokens": 12, "temperature": 0.8, "seed": 3}
    whole = client.chat.completions.create(**options)
    chunks = list(client.chat.completions.create(**options, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices) == whole.choices[0].message.content
    finishes = [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices and chunk.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert {chunk.id for chunk in chunks} == {chunks[0].id} and chunks[0].object == "chat.completion.chunk"
    assert all(chunk.choices[0].logprobs is None for chunk in chunks if chunk.choices)  # sent while sampling, before any logprobs exist


def test_a_client_that_hangs_up_stops_the_generation(front_url):
    def health():
        return httpx.get(f"{front_url}/health", timeout=30).json()

    before = health()
    body = {"prompt": "def main(", "max_tokens": 4000, "temperature": 1.0, "seed": 2, "stream": True}
    with httpx.Client(timeout=120) as http, http.stream("POST", f"{front_url}/v1/completions", json=body) as answer:
        events = 0
        for line in answer.iter_lines():
            events += line.startswith("data: ")
            if events == 3:
                break
    deadline = time.monotonic() + 60
    while (now := health())["completion_tokens"] == before.get("completion_tokens", 0) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert now.get("streams_hung_up", 0) == before.get("streams_hung_up", 0) + 1
    assert 3 <= now["completion_tokens"] - before.get("completion_tokens", 0) < 4000


def test_streamed_chat_with_logprobs_has_one_event_per_token(client, engine):
    options = {"model": "small", "messages": MESSAGES, "max_tokens": 10, "temperature": 0.8, "seed": 5}
    whole = client.chat.completions.create(**options, logprobs=True)
    chunks = list(client.chat.completions.create(**options, logprobs=True, stream=True))
    streamed = [entry for chunk in chunks if chunk.choices and chunk.choices[0].logprobs for entry in chunk.choices[0].logprobs.content]
    assert [entry.logprob for entry in streamed] == [entry.logprob for entry in whole.choices[0].logprobs.content]
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks) == whole.choices[0].message.content


def test_top_logprobs_are_the_likeliest_tokens_at_each_position(client, engine):
    chat = client.chat.completions.create(model="small", messages=MESSAGES, max_tokens=6, temperature=0, logprobs=True, top_logprobs=3)
    for entry in chat.choices[0].logprobs.content:
        values = [alternative.logprob for alternative in entry.top_logprobs]
        assert len(values) == 3 and values == sorted(values, reverse=True)
        assert entry.token == entry.top_logprobs[0].token and entry.logprob == pytest.approx(values[0])  # greedy: the likeliest
        assert bytes(entry.bytes).decode("utf-8", "replace") == entry.token
    local = engine.generate([GenerationRequest(prompt="def main(", max_tokens=5, temperature=0.7, seed=2, top_logprobs=2)])[0]
    text = client.completions.create(model="small", prompt="def main(", max_tokens=5, temperature=0.7, seed=2, logprobs=2)
    logprobs = text.choices[0].logprobs
    assert len(logprobs.top_logprobs) == len(local.top_logprobs) == 5
    # {text: logprob}: the 2 likeliest and the sampled token, as OpenAI's legacy completions (two ids of one text share an entry)
    name = engine.tokenizer.decode
    for position, top, sampled_id, sampled in zip(logprobs.top_logprobs, local.top_logprobs, local.token_ids, local.logprobs):
        expected = {**{name([token]): value for token, value in top}, name([sampled_id]): sampled}
        assert position.keys() == expected.keys()
        assert list(position.values()) == pytest.approx(list(expected.values()), abs=1e-4)
    assert logprobs.text_offset[0] == 0 and logprobs.text_offset == sorted(logprobs.text_offset)


@pytest.mark.parametrize("options,error", [
    ({"top_logprobs": 2}, '"logprobs" must be true'),
    ({"logprobs": True, "top_logprobs": 21}, "from 0 to 20"),
])
def test_top_logprobs_out_of_bounds_are_400(client, options, error):
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="small", messages=MESSAGES, max_tokens=2, **options)
    assert error in raised.value.body["message"]
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="small", prompt="x", max_tokens=2, logprobs=6)


def test_completions_take_a_list_of_prompts_with_n_choices_each(client, engine):
    prompts = ["def main(", "class Order:"]
    answer = client.completions.create(model="small", prompt=prompts, n=2, max_tokens=6, temperature=0.9, seed=20)
    local = engine.generate([GenerationRequest(prompt=prompt, max_tokens=6, temperature=0.9, seed=20 + j) for prompt in prompts for j in range(2)])
    assert [choice.index for choice in answer.choices] == [0, 1, 2, 3]
    assert [choice.text for choice in answer.choices] == [completion.text for completion in local]
    assert answer.choices[0].text != answer.choices[1].text or local[0].token_ids == local[1].token_ids
    assert answer.usage.prompt_tokens == local[0].prompt_tokens + local[2].prompt_tokens
    assert answer.usage.completion_tokens == sum(completion.completion_tokens for completion in local)


def test_streamed_completion_stops_where_the_unstreamed_one_does(client, engine):
    options = {"model": "small", "prompt": "def handler(event):", "max_tokens": 24, "temperature": 0.9, "seed": 8}
    whole = client.completions.create(**options)
    (local,) = engine.generate([GenerationRequest(prompt=options["prompt"], max_tokens=24, temperature=0.9, seed=8)])
    stop = next((local.text[i:i + 2] for i in range(4, len(local.text) - 1) if local.text[i:i + 2].strip()), None)
    assert stop, "the sampled text is too short to pick a stop sequence from"
    stopped = client.completions.create(**options, stop=stop)
    streamed = list(client.completions.create(**options, stop=[stop], stream=True))
    assert whole.choices[0].text == local.text
    assert stopped.choices[0].text == local.text[: local.text.find(stop)] and stopped.choices[0].finish_reason == "stop"
    assert "".join(chunk.choices[0].text for chunk in streamed) == stopped.choices[0].text
    assert [chunk.choices[0].finish_reason for chunk in streamed if chunk.choices[0].finish_reason] == ["stop"]


def test_choices_say_which_stop_string_ended_them_or_null_at_the_end_of_text_as_vllms_server_does(front_url, engine):
    (local,) = engine.generate([GenerationRequest(prompt="def main(", max_tokens=12, temperature=0)])
    stop = local.text[len(local.text) // 2:][:5]
    eos = engine.tokenizer.eos_token_id
    stopped = {"model": "small", "prompt": "def main(", "max_tokens": 12, "temperature": 0, "stop": [stop]}
    ended = {"model": "small", "messages": AS_ENGINE, "max_tokens": 12, "stop": ["</action>"], "logit_bias": {str(eos): 100}}
    with httpx.Client(base_url=front_url, timeout=120) as http:
        (choice,) = http.post("/v1/completions", json=stopped).json()["choices"]
        (chat,) = http.post("/v1/chat/completions", json=ended).json()["choices"]
        streams = [[json.loads(line[6:]) for line in http.post(path, json={**body, "stream": True, **extra}).text.splitlines()
                    if line.startswith("data: {")] for path, body, extra in
                   [("/v1/completions", stopped, {}), ("/v1/completions", stopped, {"logprobs": 1}), ("/v1/chat/completions", ended, {})]]
    assert (choice["finish_reason"], choice["stop_reason"], choice["text"]) == ("stop", stop, local.text[:local.text.find(stop)])
    assert (chat["finish_reason"], chat["stop_reason"], chat["message"]["content"]) == ("stop", None, "")
    lasts = [[c for event in events for c in event["choices"] if c["finish_reason"]] for events in streams]
    assert [[(c["finish_reason"], c["stop_reason"]) for c in last] for last in lasts] == [[("stop", stop)]] * 2 + [[("stop", None)]]


def test_models_are_listed_and_retrieved(client):
    assert [model.id for model in client.models.list()] == ["small", "sentence-transformers/all-MiniLM-L6-v2"]
    assert client.models.retrieve("small").id == "small"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")


@pytest.mark.parametrize("options,error", [
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]}, "only text parts"),
    ({"messages": [{"role": "critic", "content": "x"}]}, "role must be one of"),
    ({"messages": [{"role": "user", "content": "x"}], "n": 17}, "at most 16"),
    ({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "yaml"}}, "response_format.type"),
    ({"messages": [{"role": "user", "content": "x"}], "stop": 5}, '"stop" must be'),
    ({"messages": [{"role": "user", "content": "x"}], "tool_choice": {"type": "function", "function": {"name": "rm_rf"}},
      "tools": [{"type": "function", "function": {"name": "list_files", "parameters": {"type": "object"}}}]}, "not among"),
    ({"messages": [{"role": "user", "content": "x"}], "presence_penalty": 3}, "from -2 to 2"),
    # found by the engine, not the parser: still the request's fault, so 400 (a 500 would make SDKs retry it)
    ({"messages": [{"role": "user", "content": "word " * 20000}]}, "at most"),
    ({"messages": [{"role": "user", "content": "x"}],
      "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "no-such-type"}}}}, "json_schema is not usable"),
])
def test_requests_it_cannot_serve_are_400_with_a_reason(client, options, error):
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="small", **options)
    assert error in raised.value.body["message"]
    assert raised.value.body["type"] == "invalid_request_error"


def test_a_null_max_completion_tokens_leaves_max_tokens_in_force(front_url):
    body = {"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": None, "max_tokens": 3, "temperature": 1.0, "seed": 1}
    answer = httpx.post(front_url + "/v1/chat/completions", json=body, timeout=60).json()
    assert 1 <= answer["usage"]["completion_tokens"] <= 3


def test_completions_logprobs_zero_still_asks_for_the_sampled_tokens(front_url):
    body = {"prompt": "def f", "max_tokens": 4, "logprobs": 0, "stream": True, "temperature": 0}
    with httpx.stream("POST", front_url + "/v1/completions", json=body, timeout=60) as response:
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
    logprobs = [choice["logprobs"] for event in events for choice in event["choices"] if choice.get("logprobs")]
    assert logprobs and all(value <= 0 for entry in logprobs for value in entry["token_logprobs"])
    # as vLLM's server: each position's top_logprobs is the sampled token alone (logprobs + 1 entries)
    assert all(entry["top_logprobs"] == [{entry["tokens"][0]: entry["token_logprobs"][0]}] for entry in logprobs)
    answer = httpx.post(front_url + "/v1/completions", json={**body, "stream": False}, timeout=60).json()["choices"][0]["logprobs"]
    assert answer["top_logprobs"] == [{token: value} for token, value in zip(answer["tokens"], answer["token_logprobs"])]


def test_response_format_json_schema_gives_a_valid_document(client):
    schema = {"type": "object", "additionalProperties": False, "required": ["verdict", "score"],
              "properties": {"verdict": {"enum": ["pass", "fail"]}, "score": {"type": "integer", "minimum": 0, "maximum": 9}}}
    answer = client.chat.completions.create(model="small", messages=[{"role": "user", "content": "grade it"}], max_tokens=32, seed=4,
                                            response_format={"type": "json_schema", "json_schema": {"name": "grade", "schema": schema}})
    document = json.loads(answer.choices[0].message.content)
    assert set(document) == {"verdict", "score"} and document["verdict"] in ("pass", "fail") and 0 <= document["score"] <= 9


def test_embeddings_through_the_sdk_equal_the_in_process_model(client, embedder, front_url):
    texts = ["Terraform plan replaces the node group", "pytest fixture scope session"]
    default = client.embeddings.create(model="all-MiniLM-L6-v2", input=texts)  # the SDK asks for base64 and decodes it
    floats = client.embeddings.create(model="all-MiniLM-L6-v2", input=texts, encoding_format="float")
    expected = embedder.embed(texts)
    for answer in (default, floats):
        assert [item.index for item in answer.data] == [0, 1]
        assert np.allclose(np.array([item.embedding for item in answer.data]), expected, atol=1e-5)
    raw = client.with_raw_response.embeddings.create(model="m", input="x", encoding_format="base64").http_response.json()
    decoded = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    assert decoded.shape == (384,) and np.allclose(decoded, embedder.embed(["x"])[0], atol=1e-5)
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="m", input="x", dimensions=128)
    with pytest.raises(openai.NotFoundError) as refused:  # the generation model does not embed (it answered MiniLM's vectors)
        client.embeddings.create(model="small", input="x")
    assert refused.value.body["code"] == "model_not_found" and "all-MiniLM-L6-v2" in refused.value.body["message"]
