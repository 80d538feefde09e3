"""OpenAI's penalties and logit_bias, and vLLM's top_k, min_p and repetition_penalty: applied by the transformers
engine, and taken by the front (top level or an SDK's extra_body) and sent on by the openai engine."""

from __future__ import annotations

import json
from collections import Counter

import httpx
import openai
import pytest

from actors.engines.openai_engine import OpenAIEngine
from actors.engines.types import GenerationRequest

PROMPT = "def handler(event):"


def run(engine, **options):
    (completion,) = engine.generate([GenerationRequest(prompt=PROMPT, max_tokens=24, seed=11, **options)])
    assert completion.error is None
    return completion


def test_top_k_one_and_min_p_one_sample_the_greedy_answer(engine):
    greedy = run(engine, temperature=0).token_ids
    assert run(engine, temperature=1.0, top_k=1).token_ids == greedy
    assert run(engine, temperature=1.0, min_p=1.0).token_ids == greedy
    assert run(engine, temperature=1.0).token_ids != greedy  # without them, the seed's sample


def test_logit_bias_bans_and_forces_tokens(engine):
    greedy = run(engine, temperature=0).token_ids
    banned = run(engine, temperature=0, logit_bias={greedy[0]: -100}).token_ids
    assert banned[0] != greedy[0] and greedy[0] not in banned
    forced = run(engine, temperature=0, logit_bias={greedy[3]: 100}).token_ids
    assert set(forced) == {greedy[3]}


def test_penalties_cut_repetition(engine):
    def most_repeated(token_ids):
        return Counter(token_ids).most_common(1)[0][1]

    plain = run(engine, temperature=0).token_ids
    assert most_repeated(run(engine, temperature=0, frequency_penalty=2.0).token_ids) < most_repeated(plain)
    assert len(set(run(engine, temperature=0, presence_penalty=2.0).token_ids)) > len(set(plain))
    assert run(engine, temperature=0, repetition_penalty=2.0).token_ids != plain


def test_the_front_takes_them_from_extra_body_and_logit_bias(front_url, engine):
    with openai.OpenAI(base_url=f"{front_url}/v1", api_key="unused", max_retries=0, timeout=120) as sdk:
        greedy = run(engine, temperature=0)
        top_k = sdk.completions.create(model="small", prompt=PROMPT, max_tokens=24, seed=11, temperature=1.0, extra_body={"top_k": 1})
        assert top_k.choices[0].text == greedy.text
        biased = sdk.completions.create(model="small", prompt=PROMPT, max_tokens=24, temperature=0, frequency_penalty=2.0,
                                        logit_bias={str(greedy.token_ids[0]): -100})
        assert biased.choices[0].text == run(engine, temperature=0, frequency_penalty=2.0, logit_bias={greedy.token_ids[0]: -100}).text
        with pytest.raises(openai.BadRequestError) as raised:
            sdk.completions.create(model="small", prompt=PROMPT, max_tokens=2, extra_body={"min_p": 2})
    assert raised.value.body["param"] == "min_p"


def test_the_openai_engine_sends_only_what_changes_the_sampling():
    bodies = []

    def answer(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json={"model": "m", "choices": [{"text": "x", "finish_reason": "stop"}],
                                         "usage": {"prompt_tokens": 1, "completion_tokens": 1}})

    client = OpenAIEngine("http://upstream", "m", api_key_env=None, transport=httpx.MockTransport(answer))
    client.generate([GenerationRequest(prompt="a", frequency_penalty=0.5, top_k=3, logit_bias={42: -100}),
                     GenerationRequest(prompt="b")])
    changed, plain = sorted(bodies, key=lambda body: body["prompt"])
    assert (changed["frequency_penalty"], changed["top_k"], changed["logit_bias"]) == (0.5, 3, {"42": -100})
    assert not {"presence_penalty", "frequency_penalty", "top_k", "min_p", "repetition_penalty", "logit_bias"} & set(plain)
