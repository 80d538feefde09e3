"""What the generate front refuses, and how: 400 in OpenAI's shape naming the `param`, never a 500 for a client's mistake."""

from __future__ import annotations

import httpx
import pytest

CHAT = {"messages": [{"role": "user", "content": "x"}], "max_tokens": 2}
PROMPT = {"prompt": "def f", "max_tokens": 2}


def post(front_url: str, path: str, body: dict | None = None, content: bytes | None = None) -> httpx.Response:
    return httpx.post(front_url + path, json=body, content=content, headers={"content-type": "application/json"}, timeout=60)


@pytest.mark.parametrize("path,body,param,words", [
    ("/v1/completions", {**PROMPT, "seed": 2**64}, "seed", "must be an integer"),
    ("/v1/completions", {**PROMPT, "suffix": "x"}, "suffix", "not supported"),
    ("/v1/completions", {**PROMPT, "stream_options": {"include_usage": True}}, "stream_options", "only allowed when"),
    ("/v1/completions", {**PROMPT, "logit_bias": {"abc": 5}}, "logit_bias", "token ids"),
    ("/v1/completions", {**PROMPT, "max_tokens": 10**9}, "max_tokens", "from 1 to 4096"),
    ("/v1/completions", {**PROMPT, "max_tokens": "5"}, "max_tokens", "must be an integer"),
    ("/v1/completions", {**PROMPT, "temperature": 5}, "temperature", "less than or equal to 2"),
    ("/v1/chat/completions", {**CHAT, "max_completion_tokens": 0}, "max_completion_tokens", "from 1 to"),
    ("/v1/chat/completions", {**CHAT, "tools": "x"}, "tools", "must be a list"),
    ("/v1/chat/completions", {**CHAT, "tools": [{"type": "function"}]}, "tools", "must be a list"),
    ("/v1/chat/completions", {**CHAT, "tool_choice": "auto"}, "tool_choice", 'only allowed when "tools"'),
    ("/v1/chat/completions", {**CHAT, "continue_final_message": "yes"}, "continue_final_message", "true or false"),
    ("/v1/completions", {**PROMPT, "echo": True, "logprobs": 0, "stream": True}, "stream", "not supported"),
    ("/v1/completions", {**PROMPT, "max_tokens": 0}, "max_tokens", "0 only with echo"),
    ("/v1/completions", {**PROMPT, "echo": 1}, "echo", "true or false"),
    ("/v1/chat/completions", {**CHAT, "echo": True}, "echo", "not supported on chat"),
    ("/v1/chat/completions", {**CHAT, "logprobs": 3}, "logprobs", "true or false"),
    ("/v1/chat/completions", {**CHAT, "stream": True, "stream_options": {"include_usage": "yes"}}, "stream_options", "true or false"),
    ("/v1/chat/completions", {**CHAT, "stream": True, "stream_options": ["include_usage"]}, "stream_options", "must be an object"),
    ("/v1/chat/completions", {**CHAT, "stream": True, "stream_options": {"include_usage": True, "continuous_usage_stats": True}},
     "stream_options.continuous_usage_stats", "not supported"),  # vLLM's usage in every event: not silently left out
    ("/v1/completions", {**PROMPT, "stream": True, "stream_options": {"include_usage": False, "usage": True}}, "stream_options.usage", "not supported"),
    ("/v1/chat/completions", {**CHAT, "function_call": {"name": "f"}}, "function_call", 'send the functions as "tools"'),
    ("/v1/chat/completions", {**CHAT, "functions": [{"name": "f", "parameters": {"type": "object"}}]}, "functions", "deprecated function calling"),
    ("/v1/chat/completions", {**CHAT, "functions": [{"name": "f"}], "function_call": "auto"}, "functions", 'send the functions as "tools"'),
    ("/v1/chat/completions", {**CHAT, "modalities": ["text", "audio"]}, "modalities", "answers in text"),
    ("/v1/chat/completions", {**CHAT, "audio": {"voice": "alloy", "format": "wav"}}, "audio", "not supported"),
    ("/v1/chat/completions", {**CHAT, "max_token": 5}, "max_token", "unrecognized request argument"),
    ("/v1/chat/completions", {**CHAT, "chat_template_kwargs": ["enable_thinking"]}, "chat_template_kwargs", "must be an object"),
    ("/v1/chat/completions", {**CHAT, "guided_whitespace_pattern": " "}, "guided_whitespace_pattern", "unrecognized"),
    ("/v1/chat/completions", {**CHAT, "web_search_options": {}}, "web_search_options", "unrecognized"),
    ("/v1/chat/completions", {**CHAT, "reasoning_effort": "low"}, "reasoning_effort", "unrecognized"),
    ("/v1/completions", {**PROMPT, "top_logprobs": 2}, "top_logprobs", "not a field /v1/completions takes"),
    ("/v1/completions", {**PROMPT, "messages": CHAT["messages"]}, "messages", "unrecognized"),
])
def test_a_bad_field_is_a_400_that_names_it(front_url, path, body, param, words):
    response = post(front_url, path, body)
    error = response.json()["error"]
    assert response.status_code == 400 and error["param"] == param and words in error["message"], error
    assert "GenerationRequest" not in error["message"] and error["type"] == "invalid_request_error"


@pytest.mark.parametrize("path,raw", [
    ("/v1/completions", b'{"prompt": "a\\ud83dxb", "max_tokens": 2}'),
    ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "a\\ud83dxb"}], "max_tokens": 2, "stream": true}'),
    ("/v1/completions", b'{"prompt": "def f", "stop": ["\\ud800"], "max_tokens": 2}'),
    ("/v1/embeddings", b'{"input": ["ok", "a\\ud83dxb"]}'),
])
def test_a_lone_surrogate_is_a_400_not_a_500(front_url, path, raw):
    response = post(front_url, path, content=raw)
    assert response.status_code == 400 and "surrogate" in response.json()["error"]["message"]


def test_a_prompt_and_answer_past_the_context_is_context_length_exceeded(front_url):
    response = post(front_url, "/v1/completions", {"prompt": "a " * 2500, "max_tokens": 4000})
    error = response.json()["error"]
    assert response.status_code == 400 and error["code"] == "context_length_exceeded"
    assert "maximum context length is 4096 tokens" in error["message"]  # the model's max_position_embeddings


def test_logprobs_false_gives_null_and_left_out_gives_them(front_url):
    off = post(front_url, "/v1/chat/completions", {**CHAT, "logprobs": False, "seed": 1}).json()
    left_out = post(front_url, "/v1/chat/completions", {**CHAT, "seed": 1}).json()
    assert off["choices"][0]["logprobs"] is None
    assert len(left_out["choices"][0]["logprobs"]["content"]) == left_out["usage"]["completion_tokens"]
    assert off["choices"][0]["message"] == left_out["choices"][0]["message"]


def test_a_repeated_key_keeps_its_last_value_and_empty_stops_are_ignored(front_url):
    repeated = post(front_url, "/v1/completions", content=b'{"prompt": "x", "prompt": "def f", "max_tokens": 3, "seed": 2, "stop": [""]}')
    plain = post(front_url, "/v1/completions", {"prompt": "def f", "max_tokens": 3, "seed": 2})
    assert repeated.status_code == 200 and repeated.json()["choices"][0]["text"] == plain.json()["choices"][0]["text"]


def test_routes_answer_404_for_unknown_paths_and_405_with_allow_for_a_wrong_method(front_url):
    assert httpx.get(front_url + "/v1/nothing", timeout=30).status_code == 404
    wrong = httpx.get(front_url + "/v1/chat/completions", timeout=30)
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"


def test_a_client_that_goes_away_stops_an_unstreamed_generation(front_url):
    """Serve cancels the handler of a request whose client hung up; the engine stops at its next token."""
    import time

    before = httpx.get(front_url + "/health", timeout=30).json()
    body = {"prompt": "def main(", "max_tokens": 4000, "temperature": 1.0, "seed": 5, "n": 2}
    with pytest.raises(httpx.ReadTimeout):  # the client gives up after a second and closes its connection
        httpx.post(front_url + "/v1/completions", json=body, timeout=httpx.Timeout(60, read=1.0))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        after = httpx.get(front_url + "/health", timeout=30).json()
        if after.get("requests_hung_up", 0) > before.get("requests_hung_up", 0):
            break
        time.sleep(0.2)
    assert after.get("requests_hung_up", 0) == before.get("requests_hung_up", 0) + 1
    started = time.monotonic()
    assert post(front_url, "/v1/completions", PROMPT).status_code == 200
    assert time.monotonic() - started < 10  # not queued behind 8,000 tokens
    generated = httpx.get(front_url + "/health", timeout=30).json()["completion_tokens"] - before.get("completion_tokens", 0)
    assert generated < 4000


@pytest.mark.parametrize("method,path", [("POST", "/v1/chat/completions/extra"), ("POST", "/anything/v1/chat/completions"),
                                         ("POST", "/x/v1/completions"), ("GET", "/anything/health"), ("GET", "/x/v1/models"),
                                         ("POST", "/v1/embeddings/extra")])
def test_a_path_that_only_ends_or_starts_like_a_route_is_404_naming_the_routes(front_url, method, path):
    response = httpx.request(method, front_url + path, json=CHAT, timeout=30)
    error = response.json()["error"]
    assert response.status_code == 404 and error["code"] == "not_found" and error["type"] == "invalid_request_error"
    assert "/generate-test" + path in error["message"] and "/v1/chat/completions, /v1/completions" in error["message"]


def test_hints_that_leave_the_answer_as_it_is_are_taken_and_ignored(front_url):
    hints = {"user": "u1", "store": False, "metadata": {"run": "x"}, "service_tier": "auto", "parallel_tool_calls": False,
             "prediction": {"type": "content", "content": "x"}, "prompt_cache_key": "k", "safety_identifier": "s",
             "functions": [{"name": "f"}], "function_call": "none"}  # functions the model may not call: the same answer
    plain = post(front_url, "/v1/chat/completions", {**CHAT, "seed": 3, "temperature": 1.0}).json()
    hinted = post(front_url, "/v1/chat/completions", {**CHAT, "seed": 3, "temperature": 1.0, **hints}).json()
    assert hinted["choices"][0]["message"] == plain["choices"][0]["message"]
    streamed = post(front_url, "/v1/chat/completions", {**CHAT, "stream": True, "stream_options": {"include_usage": True, "include_obfuscation": False}})
    assert streamed.status_code == 200 and streamed.text.rstrip().endswith("data: [DONE]")  # OpenAI's padding option: taken
