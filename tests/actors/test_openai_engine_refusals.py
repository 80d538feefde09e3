"""The openai engine against an upstream that refuses parameters its model does not support, as OpenAI's reasoning
models do (`max_tokens`, `temperature`, `logprobs`, `stop`): the request is sent again without them (`max_tokens` as
`max_completion_tokens`), every later request too, with one warning; any other 400 fails that request alone. A
reasoning the upstream split off comes back in `<think>`."""

from __future__ import annotations

import json
import logging

import httpx

from actors.engines.openai_engine import OpenAIEngine
from actors.engines.types import GenerationRequest

# the parameter -> the error OpenAI's API answers for a model that does not support it
REFUSALS = {
    "max_tokens": ("unsupported_parameter", "Unsupported parameter: 'max_tokens' is not supported with this model. "
                                            "Use 'max_completion_tokens' instead."),
    "temperature": ("unsupported_value", "Unsupported value: 'temperature' does not support 0.7 with this model. "
                                         "Only the default (1) value is supported."),
    "logprobs": ("unsupported_parameter", "Unsupported parameter: 'logprobs' is not supported with this model."),
    "stop": ("unsupported_parameter", "Unsupported parameter: 'stop' is not supported with this model."),
}


def reasoning_upstream(bodies: list[dict]):
    def answer(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        bodies.append(body)
        for param, (code, message) in REFUSALS.items():
            if param in body:
                return httpx.Response(400, json={"error": {"message": message, "type": "invalid_request_error",
                                                           "param": param, "code": code}})
        return httpx.Response(200, json={"model": "o3", "usage": {"prompt_tokens": 3, "completion_tokens": 4},
                                         "choices": [{"index": 0, "finish_reason": "stop",
                                                      "message": {"role": "assistant", "content": "done. END more"}}]})
    return answer


def test_refused_parameters_are_dropped_once_and_for_every_later_request(caplog):
    bodies: list[dict] = []
    engine = OpenAIEngine("http://upstream/v1", "o3", api_key_env=None, transport=httpx.MockTransport(reasoning_upstream(bodies)))
    request = GenerationRequest(messages=[{"role": "user", "content": "hi"}], max_tokens=64, temperature=0.7, stop=["END"])
    with caplog.at_level(logging.WARNING, logger="actors.engines.openai_engine"):
        [first] = engine.generate([request])
        assert first.error is None and first.text == "done. "  # the stop the upstream refused is still cut here
        assert first.ignored == ["logprobs", "stop", "temperature"]  # max_tokens went as max_completion_tokens
        assert bodies[-1]["max_completion_tokens"] == 64
        assert not {"max_tokens", "temperature", "logprobs", "stop"} & set(bodies[-1])
        assert bodies[-1]["messages"] == [{"role": "user", "content": "hi"}] and bodies[-1]["top_p"] == 1.0
        sent_before = len(bodies)
        [second] = engine.generate([request])
    assert second.text == "done. " and len(bodies) == sent_before + 1  # learned: no refusal the second time
    warned = sorted(record.getMessage().split(" refuses ")[1].split(" ")[0] for record in caplog.records)
    assert warned == ["'logprobs'", "'max_tokens'", "'stop'", "'temperature'"]


def test_a_refusal_of_what_shapes_the_answer_fails_the_request_alone():
    bodies: list[dict] = []

    def answer(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(400, json={"error": {"message": "Unsupported parameter: 'response_format' is not supported "
                                                              "with this model.", "param": "response_format",
                                                   "code": "unsupported_parameter"}})

    engine = OpenAIEngine("http://upstream/v1", "o1-mini", api_key_env=None, transport=httpx.MockTransport(answer))
    [completion] = engine.generate([GenerationRequest(messages=[{"role": "user", "content": "hi"}],
                                                      json_schema={"type": "object"})])
    assert completion.finish_reason == "error" and completion.invalid_request and "response_format" in completion.error
    assert len(bodies) == 1 and engine.refused == set()


def test_a_plain_bad_request_is_not_retried():
    bodies: list[dict] = []

    def answer(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(400, json={"error": {"message": "temperature must be <= 2", "param": "temperature", "code": None}})

    engine = OpenAIEngine("http://upstream/v1", "m", api_key_env=None, transport=httpx.MockTransport(answer))
    [completion] = engine.generate([GenerationRequest(prompt="a", temperature=0.5)])
    assert completion.invalid_request and len(bodies) == 1 and engine.refused == set()


def test_an_upstreams_split_off_reasoning_comes_back_in_think_before_the_content():
    messages = iter([{"role": "assistant", "content": "<action>{}</action>", "reasoning": "print becomes logging"},
                     {"role": "assistant", "content": "ok", "reasoning_content": "older servers name it so"},
                     {"role": "assistant", "content": "plain", "reasoning": None}])

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"model": "m", "usage": {"prompt_tokens": 1, "completion_tokens": 1},
                                         "choices": [{"index": 0, "finish_reason": "stop", "message": next(messages)}]})

    engine = OpenAIEngine("http://upstream/v1", "m", api_key_env=None, transport=httpx.MockTransport(answer), concurrency=1)
    texts = [engine.generate([GenerationRequest(messages=[{"role": "user", "content": "hi"}])])[0].text for _ in range(3)]
    assert texts == ["<think>print becomes logging</think><action>{}</action>", "<think>older servers name it so</think>ok", "plain"]
