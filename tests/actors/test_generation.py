"""Generation engines: transformers in-process, openai against the project's own OpenAI-compatible front."""

from __future__ import annotations

import json

import httpx
import pytest

from actors.engines.openai_engine import OpenAIEngine
from actors.engines.types import GenerationRequest


def test_the_small_model_loads_like_a_real_checkpoint(small_model):
    from transformers import AutoConfig, AutoTokenizer

    assert AutoConfig.from_pretrained(small_model).model_type == "qwen3"
    tokenizer = AutoTokenizer.from_pretrained(small_model)
    text = "def fetch_user(id):\n    return db.get(id)  # ünïcode ✓"
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text
    assert "<|im_start|>assistant" in tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)


def test_seeded_sampling_is_reproducible_and_keeps_tokens_and_logprobs(engine):
    request = GenerationRequest(prompt="def main(", max_tokens=16, temperature=0.9, seed=11)
    first, second = engine.generate([request, request])
    other = engine.generate([request.model_copy(update={"seed": 12})])[0]
    assert first.token_ids == second.token_ids and first.text == second.text
    assert first.token_ids != other.token_ids
    assert len(first.logprobs) == len(first.token_ids) == first.completion_tokens == 16
    assert all(value <= 0 for value in first.logprobs)
    assert first.finish_reason == "length" and first.engine == "transformers"


def test_chat_messages_stops_schema_and_a_failing_request_alone(engine):
    chat = GenerationRequest(messages=[{"role": "user", "content": "rename fetch_user"}], max_tokens=8, temperature=0)
    too_long = GenerationRequest(prompt="word " * 20000, max_tokens=4)
    cut = GenerationRequest(prompt="{", max_tokens=2, temperature=0, json_schema={"type": "object", "required": ["a"]})
    bad_schema = GenerationRequest(prompt="x", max_tokens=4, json_schema={"type": "no-such-type"})
    results = engine.generate([chat, too_long, cut, bad_schema])
    assert results[0].finish_reason in ("stop", "length") and results[0].prompt_tokens > 5
    assert results[1].finish_reason == "error" and "at most" in results[1].error
    assert results[2].finish_reason == "length" and results[2].schema_valid is False  # a document cut by max_tokens
    assert results[3].finish_reason == "error" and "json_schema is not usable" in results[3].error


ACTION_SCHEMA = {"type": "object", "additionalProperties": False, "required": ["op", "file", "dry_run"],
                 "properties": {"op": {"enum": ["rename", "extract", "inline"]}, "file": {"type": "string", "maxLength": 12},
                                "dry_run": {"type": "boolean"}}}


def test_a_json_schema_guides_even_a_random_model_to_valid_documents(engine):
    import jsonschema

    requests = [GenerationRequest(prompt="Plan the refactoring:", max_tokens=48, temperature=1.0, seed=seed, json_schema=ACTION_SCHEMA)
                for seed in range(5)]
    guided = engine.generate(requests)
    free = engine.generate([request.model_copy(update={"structured_output": None}) for request in requests])
    for completion in guided:
        assert completion.finish_reason == "stop" and completion.schema_valid is True
        jsonschema.validate(json.loads(completion.text), ACTION_SCHEMA)
    assert not any(completion.text.startswith("{") for completion in free)  # the model alone writes no such thing


def test_a_started_answer_is_continued_not_answered_in_a_new_turn(engine):
    messages = [{"role": "user", "content": "rename fetch_user"}, {"role": "assistant", "content": "<think>find the calls"}]
    continued = engine.generate([GenerationRequest(messages=messages, continue_final_message=True, max_tokens=8, temperature=0.9, seed=3)])[0]
    rendered = engine.tokenizer.apply_chat_template(messages[:1], add_generation_prompt=True, tokenize=False) + messages[1]["content"]
    as_text = engine.generate([GenerationRequest(prompt=rendered, max_tokens=8, temperature=0.9, seed=3)])[0]
    assert continued.error is None and continued.token_ids == as_text.token_ids
    with pytest.raises(ValueError, match="last one is the assistant"):
        GenerationRequest(messages=messages[:1], continue_final_message=True)


def test_openai_engine_against_our_own_front_matches_the_local_engine(front_url, engine):
    client = OpenAIEngine(front_url, "small", token_ids_in_logprobs=True, api_key_env=None, continue_final_message=True)
    try:
        requests = [GenerationRequest(prompt="class Order:", max_tokens=10, temperature=0.8, seed=5, top_logprobs=3),
                    GenerationRequest(messages=[{"role": "user", "content": "fix the test"}], max_tokens=10, temperature=0.8, seed=5, top_logprobs=2),
                    GenerationRequest(messages=[{"role": "user", "content": "fix the test"}, {"role": "assistant", "content": "<think>"}],
                                      continue_final_message=True, max_tokens=10, temperature=0.8, seed=5)]
        remote, local = client.generate(requests), engine.generate(requests)
        assert client.health()["ok"]
    finally:
        client.close()
    for got, expected in zip(remote, local):
        assert got.error is None
        assert got.token_ids == expected.token_ids and got.text == expected.text
        assert got.logprobs == pytest.approx(expected.logprobs, abs=1e-5)
        assert [[token for token, _ in top] for top in got.top_logprobs] == [[token for token, _ in top] for top in expected.top_logprobs]
        assert got.completion_tokens == 10


@pytest.mark.parametrize("path,body,status", [
    ("/v1/chat/completions", {"model": "other", "messages": [{"role": "user", "content": "x"}]}, 404),
    ("/v1/chat/completions", {"messages": "not a list"}, 400),
    ("/v1/completions", {"prompt": "x", "max_tokens": 10**6}, 400),
    ("/v1/completions", {"prompt": [[1, 2, -3]]}, 400),
    ("/v1/completions", {"prompt": ""}, 400),
    ("/v1/completions", {"prompt": "x", "max_tokens": 0}, 400),
    ("/v1/completions", {"prompt": "x", "temperature": 5}, 400),
    ("/v1/completions", {"prompt": "x", "n": "2"}, 400),
    ("/v1/completions", {"prompt": "x", "seed": "lucky"}, 400),
    ("/v1/chat/completions", {"messages": []}, 400),
    ("/v1/completions", {"prompt": "x" * (5 * 1024 * 1024)}, 413),
    ("/v1/nothing", {}, 404),
    ("/v1/models", {}, 405),
])
def test_front_rejects_bad_requests_in_openai_shape(front_url, path, body, status):
    response = httpx.post(front_url + path, json=body, timeout=30)
    assert response.status_code == status
    assert response.json()["error"]["message"]


def test_front_lists_its_models_and_rejects_invalid_json(front_url):
    from trajforge.constants import EMBEDDING_MODEL_NAME

    assert [card["id"] for card in httpx.get(front_url + "/v1/models", timeout=30).json()["data"]] == ["small", EMBEDDING_MODEL_NAME]
    assert httpx.get(f"{front_url}/v1/models/{EMBEDDING_MODEL_NAME}", timeout=30).json()["id"] == EMBEDDING_MODEL_NAME
    chat = httpx.post(front_url + "/v1/chat/completions", json={"model": EMBEDDING_MODEL_NAME, "messages": [{"role": "user", "content": "x"}]}, timeout=30)
    assert chat.status_code == 404 and "/v1/embeddings" in chat.json()["error"]["message"]
    bad = httpx.post(front_url + "/v1/completions", content=b'{"prompt": NaN}', headers={"content-type": "application/json"}, timeout=30)
    assert bad.status_code == 400


def test_openai_engine_retries_overload_and_fails_requests_alone():
    calls = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(json.loads(request.content)["prompt"])
        if request.url.path.endswith("/v1/completions") and json.loads(request.content)["prompt"] == "bad":
            return httpx.Response(400, json={"error": {"message": "nope"}})
        if len([c for c in calls if c == "ok"]) < 3:
            return httpx.Response(503, headers={"retry-after": "0"})
        return httpx.Response(200, json={"model": "m", "choices": [{"text": "done", "finish_reason": "stop", "stop_reason": "</action>",
                                                                     "logprobs": {"tokens": ["token_id:5", "token_id:6"], "token_logprobs": [-0.1, -0.2]}}],
                                         "usage": {"prompt_tokens": 3, "completion_tokens": 2}})

    client = OpenAIEngine("http://upstream", "m", api_key_env=None, backoff_s=0, transport=httpx.MockTransport(answer), concurrency=1)
    ok, bad = client.generate([GenerationRequest(prompt="ok", stop=["</action>"]), GenerationRequest(prompt="bad")])
    assert (ok.text, ok.token_ids, ok.logprobs) == ("done", [5, 6], [-0.1, -0.2])
    assert calls.count("ok") == 3
    assert bad.finish_reason == "error" and "400" in bad.error


def _a_stop_it_writes(engine, prompt: str) -> tuple[str, str]:
    """A stop string the small model writes, greedily, after `prompt`, and its whole answer without stops."""
    (whole,) = engine.generate([GenerationRequest(prompt=prompt, max_tokens=12, temperature=0)])
    stop = whole.text[len(whole.text) // 2:][:5]
    assert stop.strip(), whole.text
    return stop, whole.text


def test_the_transformers_engine_says_which_stop_string_ended_an_answer_and_when_the_model_ended_it(engine):
    stop, whole = _a_stop_it_writes(engine, "def main(")
    eos = engine.tokenizer.eos_token_id
    stopped, ended, cut = engine.generate([
        GenerationRequest(prompt="def main(", max_tokens=12, temperature=0, stop=[stop, "</action>"]),
        GenerationRequest(prompt="def main(", max_tokens=12, temperature=0, stop=["</action>"], logit_bias={eos: 100.0}),
        GenerationRequest(prompt="def main(", max_tokens=3, temperature=0, stop=["</action>"])])
    assert (stopped.finish_reason, stopped.stop_reason, stopped.stop_reason_known) == ("stop", stop, True)
    assert stopped.text == whole[:whole.find(stop)]
    assert (ended.finish_reason, ended.stop_reason, ended.stop_reason_known, ended.token_ids) == ("stop", None, True, [eos])
    assert (cut.finish_reason, cut.stop_reason) == ("length", None)
    # `generate` matches a stop string across the prompt's end too: stopped there, not the model's end of text
    (across,) = engine.generate([GenerationRequest(prompt="class Order:", max_tokens=12, temperature=0, stop=[":::::"])])
    assert (across.text, across.stop_reason, across.stop_reason_known) == ("::::", ":::::", True)


def test_openai_engine_reads_vllms_stop_reason_and_leaves_a_plain_openai_answer_unknown():
    def answer(request: httpx.Request) -> httpx.Response:
        choice = {"text": "<action>{}", "finish_reason": "stop"}
        prompt = json.loads(request.content)["prompt"]
        if prompt != "openai":  # vLLM's server: the stop string that matched, or null at the end of text
            choice["stop_reason"] = "</action>" if prompt == "stopped" else None
        return httpx.Response(200, json={"model": "m", "choices": [choice], "usage": {"prompt_tokens": 1, "completion_tokens": 2}})

    client = OpenAIEngine("http://upstream", "m", api_key_env=None, transport=httpx.MockTransport(answer), concurrency=1)
    try:
        stopped, ended, plain = client.generate([GenerationRequest(prompt=prompt, stop=["</action>"]) for prompt in ("stopped", "ended", "openai")])
    finally:
        client.close()
    assert (stopped.stop_reason, stopped.stop_reason_known) == ("</action>", True)
    assert (ended.stop_reason, ended.stop_reason_known) == (None, True)
    assert (plain.stop_reason, plain.stop_reason_known, plain.finish_reason) == (None, False, "stop")


def test_stop_reason_goes_from_the_engine_through_our_front_to_the_openai_engine(front_url, engine):
    stop, _ = _a_stop_it_writes(engine, "def main(")
    eos = engine.tokenizer.eos_token_id
    requests = [GenerationRequest(prompt="def main(", max_tokens=12, temperature=0, stop=[stop]),
                GenerationRequest(messages=[{"role": "user", "content": "fix the test"}], max_tokens=12, temperature=0,
                                  stop=["</action>"], logit_bias={eos: 100.0})]
    client = OpenAIEngine(front_url, "small", api_key_env=None)
    try:
        stopped, ended = client.generate(requests)
    finally:
        client.close()
    local = engine.generate(requests)
    assert (stopped.stop_reason, stopped.stop_reason_known) == (local[0].stop_reason, True) == (stop, True)
    assert (ended.stop_reason, ended.stop_reason_known, ended.text) == (None, True, "") and local[1].stop_reason is None
