"""OpenAI's penalties and logit_bias, and vLLM's top_k, min_p, repetition_penalty, min_tokens, stop_token_ids, ignore_eos
and skip_special_tokens: applied by the transformers engine, and taken by the front (top level or an SDK's extra_body)
and sent on by the openai engine."""

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
    client.generate([GenerationRequest(prompt="a", frequency_penalty=0.5, top_k=3, logit_bias={42: -100}, min_tokens=2,
                                       stop_token_ids=[7], ignore_eos=True, skip_special_tokens=False),
                     GenerationRequest(prompt="b"),
                     GenerationRequest(messages=[{"role": "user", "content": "c"}], chat_template_kwargs={"enable_thinking": False}),
                     GenerationRequest(messages=[{"role": "user", "content": "d"}])])
    changed, plain = sorted((body for body in bodies if "prompt" in body), key=lambda body: body["prompt"])
    assert (changed["frequency_penalty"], changed["top_k"], changed["logit_bias"]) == (0.5, 3, {"42": -100})
    assert (changed["min_tokens"], changed["stop_token_ids"], changed["ignore_eos"], changed["skip_special_tokens"]) == (2, [7], True, False)
    assert not {"presence_penalty", "frequency_penalty", "top_k", "min_p", "repetition_penalty", "logit_bias", "min_tokens",
                "stop_token_ids", "ignore_eos", "skip_special_tokens", "chat_template_kwargs"} & set(plain)
    kwargs, chat = sorted((body for body in bodies if "messages" in body), key=lambda body: body["messages"][0]["content"])
    assert kwargs["chat_template_kwargs"] == {"enable_thinking": False} and "chat_template_kwargs" not in chat


def complete(front_url: str, **body) -> dict:
    response = httpx.post(f"{front_url}/v1/completions", json={"prompt": PROMPT, "seed": 5, "temperature": 0.9, **body}, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def streamed_text(front_url: str, **body) -> str:
    with httpx.stream("POST", f"{front_url}/v1/completions", json={"prompt": PROMPT, "seed": 5, "temperature": 0.9, "stream": True, **body},
                      timeout=120) as response:
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
    return "".join(event["choices"][0]["text"] for event in events if event["choices"])


def test_ignore_eos_samples_max_tokens_past_the_end_of_text_and_skip_special_tokens_false_shows_them(front_url, engine):
    eos = engine.tokenizer.eos_token_id
    forced = {"max_tokens": 6, "logit_bias": {str(eos): 100}}  # the end of text, every time
    ended = complete(front_url, **forced)
    assert ended["usage"]["completion_tokens"] == 1 and ended["choices"][0]["finish_reason"] == "stop"
    ignored = complete(front_url, **forced, ignore_eos=True)
    assert ignored["usage"]["completion_tokens"] == 6 and ignored["choices"][0]["finish_reason"] == "length"
    assert ignored["choices"][0]["text"] == ""  # special tokens are left out of the text by default
    shown = complete(front_url, **forced, ignore_eos=True, skip_special_tokens=False)
    assert shown["choices"][0]["text"] == engine.tokenizer.eos_token * 6
    for logprobs in ({}, {"logprobs": 1}):  # streamed live, and as events of the finished completion
        assert streamed_text(front_url, **forced, ignore_eos=True, skip_special_tokens=False, **logprobs) == engine.tokenizer.eos_token * 6
    # the token that ended an answer stays out of its text, as in vLLM, unless include_stop_str_in_output
    assert complete(front_url, **forced, skip_special_tokens=False)["choices"][0]["text"] == ""
    assert streamed_text(front_url, **forced, skip_special_tokens=False) == ""
    kept = complete(front_url, **forced, skip_special_tokens=False, include_stop_str_in_output=True)
    assert kept["choices"][0]["text"] == engine.tokenizer.eos_token


def test_min_tokens_holds_off_the_end_of_text(front_url, engine):
    eos = engine.tokenizer.eos_token_id
    answer = complete(front_url, max_tokens=12, logit_bias={str(eos): 100}, min_tokens=4, logprobs=0, return_tokens_as_token_ids=True)
    tokens = [int(name.removeprefix("token_id:")) for name in answer["choices"][0]["logprobs"]["tokens"]]
    assert len(tokens) == answer["usage"]["completion_tokens"] == 5 and eos not in tokens[:4] and tokens[4] == eos
    assert answer["choices"][0]["finish_reason"] == "stop" and answer["choices"][0]["text"] == engine.tokenizer.decode(tokens[:4])


def test_stop_token_ids_end_the_answer_at_that_token_named_in_stop_reason(front_url, engine):
    (sampled,) = engine.generate([GenerationRequest(prompt=PROMPT, max_tokens=24, seed=5, temperature=0.9)])
    tokens = sampled.token_ids
    at = next(index for index, token in enumerate(tokens) if index >= 2 and token not in tokens[:index])
    answer = complete(front_url, max_tokens=24, stop_token_ids=[tokens[at]])
    choice = answer["choices"][0]
    assert answer["usage"]["completion_tokens"] == at + 1 and (choice["finish_reason"], choice["stop_reason"]) == ("stop", tokens[at])
    assert choice["text"] == engine.tokenizer.decode(tokens[:at], skip_special_tokens=True)  # the stop token's text left out
    assert streamed_text(front_url, max_tokens=24, stop_token_ids=[tokens[at]]) == choice["text"]


@pytest.mark.parametrize("body,param,words", [
    ({"min_tokens": 9, "max_tokens": 8}, "min_tokens", "at most max_tokens (8)"),
    ({"min_tokens": 17}, "min_tokens", "at most max_tokens (16)"),
    ({"min_tokens": -1}, "min_tokens", "integer from 0"),
    ({"min_tokens": True}, "min_tokens", "integer from 0"),
    ({"stop_token_ids": ["5"]}, "stop_token_ids", "list of token ids"),
    ({"stop_token_ids": 5}, "stop_token_ids", "list of token ids"),
    ({"ignore_eos": "yes"}, "ignore_eos", "true or false"),
    ({"skip_special_tokens": 0}, "skip_special_tokens", "true or false"),
    ({"guided_decoding_backend": "xgrammar"}, "guided_decoding_backend", "unrecognized request argument"),
])
def test_the_extras_refused_by_name(front_url, body, param, words):
    response = httpx.post(f"{front_url}/v1/completions", json={"prompt": PROMPT, **body}, timeout=60)
    error = response.json()["error"]
    assert response.status_code == 400 and error["param"] == param and words in error["message"], error


def test_min_tokens_with_stop_strings_is_refused_by_the_transformers_engine(front_url):
    response = httpx.post(f"{front_url}/v1/completions", json={"prompt": PROMPT, "min_tokens": 2, "stop": ["\n"]}, timeout=60)
    assert response.status_code == 400 and "min_tokens with stop strings" in response.json()["error"]["message"]
