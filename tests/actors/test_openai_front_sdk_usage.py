"""The generate front as a demanding OpenAI SDK user drives it: streams with usage, several choices with their
log-probabilities, JSON modes, both names of the token limit, seeds, and legacy completions with `echo`."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

MESSAGES = [{"role": "user", "content": "rename fetch_user to load_user"}]


@pytest.fixture(scope="module")
def client(front_url):
    with openai.OpenAI(base_url=f"{front_url}/v1", api_key="unused", max_retries=0, timeout=120) as sdk:
        yield sdk


def raw_events(front_url: str, path: str, body: dict) -> list[dict]:
    with httpx.stream("POST", front_url + path, json=body, timeout=120) as response:
        assert response.status_code == 200, response.read()
        return [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]


@pytest.mark.parametrize("path,body", [
    ("/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 4, "seed": 1}),
    ("/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 4, "seed": 1, "n": 2, "logprobs": True}),
    ("/v1/completions", {"prompt": "def main(", "max_tokens": 4, "seed": 1}),
])
def test_with_include_usage_every_chunk_carries_usage_null_but_the_last_as_openai_sends_them(front_url, path, body):
    events = raw_events(front_url, path, {**body, "stream": True, "stream_options": {"include_usage": True}})
    whole = httpx.post(front_url + path, json=body, timeout=120).json()
    assert all("usage" in event and event["usage"] is None for event in events[:-1])
    assert events[-1]["choices"] == [] and events[-1]["usage"] == whole["usage"]
    assert all("usage" not in event for event in raw_events(front_url, path, {**body, "stream": True}))


def test_streamed_choices_with_top_logprobs_and_usage_equal_the_unstreamed_answer(client):
    options = {"model": "small", "messages": MESSAGES, "n": 2, "max_completion_tokens": 6, "temperature": 0.9, "seed": 11,
               "logprobs": True, "top_logprobs": 2}
    whole = client.chat.completions.create(**options)
    chunks = list(client.chat.completions.create(**options, stream=True, stream_options={"include_usage": True}))
    for choice in whole.choices:
        mine = [c.choices[0] for c in chunks if c.choices and c.choices[0].index == choice.index]
        assert "".join(part.delta.content or "" for part in mine) == choice.message.content
        streamed = [entry for part in mine if part.logprobs for entry in part.logprobs.content]
        assert [(e.token, e.logprob, [t.token for t in e.top_logprobs]) for e in streamed] == \
            [(e.token, e.logprob, [t.token for t in e.top_logprobs]) for e in choice.logprobs.content]
        assert [part.finish_reason for part in mine if part.finish_reason] == [choice.finish_reason]
    assert chunks[-1].usage == whole.usage and whole.usage.completion_tokens <= 12
    same_limit = client.chat.completions.create(**{**options, "max_completion_tokens": None, "max_tokens": 6})
    assert [c.message.content for c in same_limit.choices] == [c.message.content for c in whole.choices]


@pytest.mark.parametrize("response_format", [
    {"type": "json_object"},
    {"type": "json_schema", "json_schema": {"name": "rename", "strict": True, "schema": {
        "type": "object", "additionalProperties": False, "required": ["old", "ok"],
        "properties": {"old": {"enum": ["fetch_user"]}, "ok": {"type": "boolean"}}}}},
])
def test_json_modes_stream_the_same_document_they_answer(client, response_format):
    options = {"model": "small", "messages": MESSAGES, "max_tokens": 24, "seed": 5, "response_format": response_format}
    whole = client.chat.completions.create(**options).choices[0]
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(**options, stream=True) if c.choices)
    assert streamed == whole.message.content and whole.message.content.startswith("{")
    if response_format["type"] == "json_schema":
        assert json.loads(whole.message.content)["old"] == "fetch_user"


def test_a_stop_string_and_a_stop_list_end_the_answer_where_the_stop_begins(client):
    options = {"model": "small", "messages": MESSAGES, "max_tokens": 16, "temperature": 1.0, "seed": 9}
    free = client.chat.completions.create(**options).choices[0].message.content
    stop = next(free[i:i + 2] for i in range(3, len(free) - 1) if free[i:i + 2].strip() and free.find(free[i:i + 2]) == i)
    single = client.chat.completions.create(**options, stop=stop).choices[0]
    listed = client.chat.completions.create(**options, stop=["\x00never", stop]).choices[0]
    assert single.message.content == listed.message.content == free[:free.find(stop)]
    assert single.finish_reason == listed.finish_reason == "stop"


def test_the_same_seed_gives_the_same_choices_and_each_choice_its_own_sample(client):
    options = {"model": "small", "messages": MESSAGES, "max_tokens": 12, "temperature": 1.0, "seed": 21, "n": 3}
    first, again = client.chat.completions.create(**options), client.chat.completions.create(**options)
    texts = [choice.message.content for choice in first.choices]
    assert texts == [choice.message.content for choice in again.choices] and len(set(texts)) > 1


def test_echo_puts_each_prompt_before_its_choices_unstreamed_and_streamed(client, engine):
    prompts = ["def main(", "class Order:"]
    options = {"model": "small", "max_tokens": 5, "temperature": 0.9, "seed": 3, "n": 2}
    plain = client.completions.create(**options, prompt=prompts)
    echoed = client.completions.create(**options, prompt=prompts, echo=True)
    expected = [prompts[choice.index // 2] + choice.text for choice in plain.choices]
    assert [choice.text for choice in echoed.choices] == expected
    assert all(choice.logprobs is None for choice in echoed.choices) and echoed.usage == plain.usage
    for n in (1, 2):  # one choice streams live from the model; several once they are done
        chunks = list(client.completions.create(**{**options, "n": n}, prompt=prompts[0], echo=True, stream=True))
        joined = ["".join(c.choices[0].text for c in chunks if c.choices[0].index == index) for index in range(n)]
        assert joined == expected[:n] and chunks[0].choices[0].text == prompts[0]
    token_ids = engine.tokenizer.encode(prompts[1])
    by_ids = client.completions.create(**{**options, "n": 1}, prompt=token_ids, echo=True)
    assert by_ids.choices[0].text.startswith(engine.tokenizer.decode(token_ids))


def test_a_token_that_is_part_of_a_character_carries_its_own_bytes(client, engine):
    """`bytes` is how an OpenAI client joins the pieces of a character a byte-level tokenizer cut: U+FFFD's UTF-8 would
    lose them."""
    first_byte_of_e_acute = engine.tokenizer.convert_tokens_to_ids("Ã")  # byte 0xC3 alone, spelt as its stand-in
    answer = client.chat.completions.create(model="small", messages=MESSAGES, max_tokens=1, logprobs=True, top_logprobs=1,
                                            logit_bias={str(first_byte_of_e_acute): 100}, seed=1)
    (entry,) = answer.choices[0].logprobs.content
    assert entry.token == "\ufffd" and entry.bytes == [0xC3]
    whole = client.chat.completions.create(model="small", messages=MESSAGES, max_tokens=6, logprobs=True, top_logprobs=5, seed=2)
    entries = [e for sampled in whole.choices[0].logprobs.content for e in (sampled, *sampled.top_logprobs)]
    assert all(bytes(e.bytes).decode("utf-8") == e.token for e in entries if "\ufffd" not in e.token)
    assert all(bytes(e.bytes) != "\ufffd".encode() for e in entries if e.token == "\ufffd")
