"""Prompt log-probabilities (vLLM's `prompt_logprobs`): computed by the transformers engine, answered by the front for
completions' `echo` with `logprobs` (as lm-evaluation-harness scores log-likelihoods), and read back by the openai engine."""

from __future__ import annotations

import json

import httpx
import pytest
from test_prompt_forms import post

from actors.engines.openai_engine import OpenAIEngine
from actors.engines.types import GenerationRequest

PROMPT = "def handler(event):\n    return"


@pytest.fixture(scope="module")
def service(engine):
    from serve_apps.generate.service import GenerateService
    from serve_apps.generate.settings import GenerateSettings

    return GenerateService(GenerateSettings(served_model_name="small", embed_app=None), engine=engine)


def direct_logprobs(engine, token_ids: list[int]) -> list[float]:
    """Each token's log-probability after the ones before it, from the model's logits by hand."""
    import torch

    with torch.no_grad():
        logits = engine.lm(torch.tensor([token_ids])).logits[0].float()
    distributions = torch.log_softmax(logits[:-1], dim=-1)
    return [distributions[position, token].item() for position, token in enumerate(token_ids[1:])]


def test_the_echoed_prompts_logprobs_are_the_models(engine, service):
    status, answer = post(service, "/v1/completions", {"prompt": PROMPT, "echo": True, "logprobs": 3, "max_tokens": 0})
    assert status == 200, answer
    (choice,) = answer["choices"]
    ids = engine.tokenizer(PROMPT)["input_ids"]
    logprobs = choice["logprobs"]
    assert choice["text"] == PROMPT and choice["finish_reason"] == "length" and answer["usage"]["completion_tokens"] == 0
    assert logprobs["tokens"] == [engine.tokenizer.decode([token]) for token in ids]
    assert logprobs["token_logprobs"][0] is None and logprobs["top_logprobs"][0] is None
    assert logprobs["token_logprobs"][1:] == pytest.approx(direct_logprobs(engine, ids), abs=1e-4)
    for token, value, top in zip(logprobs["tokens"][1:], logprobs["token_logprobs"][1:], logprobs["top_logprobs"][1:]):
        assert top[token] == value and 3 <= len(top) <= 4 and max(top.values()) <= 0
    assert logprobs["text_offset"] == [sum(len(token) for token in logprobs["tokens"][:i]) for i in range(len(ids))]


def test_echo_with_logprobs_puts_the_prompts_tokens_before_the_sampled_ones(engine, service):
    options = {"prompt": PROMPT, "logprobs": 1, "max_tokens": 4, "temperature": 0.9, "seed": 5}
    _, plain = post(service, "/v1/completions", options)
    status, echoed = post(service, "/v1/completions", {**options, "echo": True})
    assert status == 200, echoed
    (sampled,), (choice,) = plain["choices"], echoed["choices"]
    prompt_tokens = echoed["usage"]["prompt_tokens"]
    assert choice["text"] == PROMPT + sampled["text"] and echoed["usage"] == plain["usage"]
    for key in ("tokens", "token_logprobs", "top_logprobs"):
        assert len(choice["logprobs"][key]) == prompt_tokens + len(sampled["logprobs"][key])
        assert choice["logprobs"][key][prompt_tokens:] == sampled["logprobs"][key]
    offsets = choice["logprobs"]["text_offset"]
    assert offsets[0] == 0 and offsets[prompt_tokens:] == [offsets[prompt_tokens] + o for o in sampled["logprobs"]["text_offset"]]


def test_max_tokens_0_is_the_echoed_prompt_alone_and_refused_without_echo(service):
    status, answer = post(service, "/v1/completions", {"prompt": PROMPT, "echo": True, "max_tokens": 0})
    assert status == 200 and answer["choices"][0]["text"] == PROMPT and answer["choices"][0]["logprobs"] is None, answer
    status, answer = post(service, "/v1/completions", {"prompt": PROMPT, "max_tokens": 0})
    assert status == 400 and answer["error"]["param"] == "max_tokens" and "from 1 to" in answer["error"]["message"], answer
    with pytest.raises(ValueError, match="0 only with prompt_logprobs"):
        GenerationRequest(prompt=PROMPT, max_tokens=0)


def test_echo_with_logprobs_is_not_streamed(service):
    status, answer = post(service, "/v1/completions", {"prompt": PROMPT, "echo": True, "logprobs": 1, "stream": True})
    assert status == 400 and answer["error"]["param"] == "stream", answer


def test_the_openai_engine_asks_for_the_echo_and_reads_the_prompts_part_back(engine, service):
    sent = []

    def upstream(request: httpx.Request) -> httpx.Response:  # the front over the transformers engine, in this process
        body = json.loads(request.content)
        sent.append(body)
        status, answer = post(service, request.url.path, body)
        return httpx.Response(status, json=answer)

    remote = OpenAIEngine("http://upstream/v1", "small", api_key_env=None, token_ids_in_logprobs=True,
                          transport=httpx.MockTransport(upstream))
    options = {"prompt": PROMPT, "max_tokens": 3, "temperature": 0.9, "seed": 5, "prompt_logprobs": 2}
    (far,), (near,) = remote.generate([GenerationRequest(**options)]), engine.generate([GenerationRequest(**options)])
    assert sent[-1]["echo"] is True and sent[-1]["logprobs"] == 2
    assert far.error is None and (far.text, far.token_ids) == (near.text, near.token_ids)
    assert far.prompt_token_ids == near.prompt_token_ids and far.prompt_logprobs == near.prompt_logprobs
    assert far.prompt_top_logprobs == near.prompt_top_logprobs and far.prompt_logprobs[0] is None
    (scored,) = remote.generate([GenerationRequest(**{**options, "max_tokens": 0})])
    assert (scored.text, scored.token_ids, scored.prompt_logprobs) == ("", [], near.prompt_logprobs)
    (chat,) = remote.generate([GenerationRequest(messages=[{"role": "user", "content": "hi"}], prompt_logprobs=1)])
    assert chat.finish_reason == "error" and chat.invalid_request and "prompt_logprobs on chat" in chat.error
