"""Token-id prompts, and vLLM's `include_stop_str_in_output`, `add_generation_prompt` and `chat_template_kwargs`: in the
transformers engine, through the front (answered and streamed), and sent on by the openai engine."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from actors.engines.openai_engine import OpenAIEngine
from actors.engines.types import GenerationRequest, cut_at_stop

PROMPT = "def handler(event):"
# Qwen3's switch, in a template of its own: with enable_thinking false the answer starts after an empty thought
THINKING_OFF = "{% if add_generation_prompt and enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}"
# and its refusal of messages without a user query
NO_USER_QUERY = "{% if messages | selectattr('role', 'equalto', 'user') | list | length == 0 %}{{ raise_exception('No user query found in messages.') }}{% endif %}"
# and a variable it computes with (a string where it wants a number is a TypeError inside the template)
REPEAT = "{% if repeat is defined %}{{ '' * repeat }}{% endif %}"


def one(engine, **options):
    (completion,) = engine.generate([GenerationRequest(max_tokens=24, temperature=0.9, seed=8, **options)])
    assert completion.error is None, completion.error
    return completion


def a_stop(text: str) -> str:
    stop = next((text[i:i + 2] for i in range(4, len(text) - 1) if text[i:i + 2].strip()), None)
    assert stop, f"the sampled text {text!r} is too short to pick a stop sequence from"
    return stop


def test_cut_at_stop_keeps_the_first_stop_when_asked():
    assert cut_at_stop("a</x>b</y>", ["</y>", "</x>"]) == ("a", "</x>")
    assert cut_at_stop("a</x>b</y>", ["</y>", "</x>"], keep=True) == ("a</x>", "</x>")
    assert cut_at_stop("abc", ["</x>"], keep=True) == ("abc", None)


def test_token_ids_are_the_same_prompt_as_their_text(engine):
    ids = engine.tokenizer(PROMPT)["input_ids"]
    as_text, as_ids = one(engine, prompt=PROMPT), one(engine, prompt_token_ids=ids)
    assert as_ids.token_ids == as_text.token_ids and as_ids.prompt_tokens == len(ids)


def test_an_out_of_vocabulary_token_id_is_the_requests_fault(engine):
    (completion,) = engine.generate([GenerationRequest(prompt_token_ids=[1, 10**9], max_tokens=2)])
    assert completion.finish_reason == "error" and completion.invalid_request and "out of vocabulary" in completion.error


def test_include_stop_str_in_output_ends_the_text_with_its_stop(engine):
    whole = one(engine, prompt=PROMPT)
    stop = a_stop(whole.text)
    cut, kept = one(engine, prompt=PROMPT, stop=[stop]), one(engine, prompt=PROMPT, stop=[stop], include_stop_str_in_output=True)
    assert cut.text == whole.text[: whole.text.find(stop)]
    assert kept.text == cut.text + stop and kept.finish_reason == "stop"


def test_without_a_generation_prompt_the_chat_ends_at_the_last_message(engine):
    messages = [{"role": "user", "content": "rename fetch_user"}]
    with_header, without = one(engine, messages=messages), one(engine, messages=messages, add_generation_prompt=False)
    rendered = engine.tokenizer.apply_chat_template(messages, add_generation_prompt=False, tokenize=False)
    assert without.prompt_tokens == len(engine.tokenizer(rendered, add_special_tokens=False)["input_ids"])
    assert with_header.prompt_tokens > without.prompt_tokens


def test_the_front_answers_token_id_prompts_like_their_text(front_url, engine):
    ids = engine.tokenizer(PROMPT)["input_ids"]
    with openai.OpenAI(base_url=f"{front_url}/v1", api_key="unused", max_retries=0, timeout=120) as client:
        answer = client.completions.create(model="small", prompt=[ids, PROMPT], max_tokens=8, temperature=0.9, seed=8)
        (local,) = engine.generate([GenerationRequest(prompt=PROMPT, max_tokens=8, temperature=0.9, seed=8)])
        assert [choice.text for choice in answer.choices] == [local.text, local.text]
        assert answer.usage.prompt_tokens == 2 * len(ids)
        for bad in ([1, -2], [[1], "x", []], [1.5], [True]):
            with pytest.raises(openai.BadRequestError) as raised:
                client.completions.create(model="small", prompt=bad, max_tokens=2)
            assert raised.value.body["param"] == "prompt"


def test_the_front_keeps_the_stop_answered_and_streamed(front_url, engine):
    whole = one(engine, prompt=PROMPT)
    stop = a_stop(whole.text)
    body = {"prompt": PROMPT, "max_tokens": 24, "temperature": 0.9, "seed": 8, "stop": [stop], "include_stop_str_in_output": True}
    answered = httpx.post(f"{front_url}/v1/completions", json=body, timeout=120).json()
    with httpx.stream("POST", f"{front_url}/v1/completions", json={**body, "stream": True}, timeout=120) as response:
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
    expected = whole.text[: whole.text.find(stop)] + stop
    assert answered["choices"][0]["text"] == expected
    assert "".join(event["choices"][0]["text"] for event in events) == expected
    refused = httpx.post(f"{front_url}/v1/completions", json={**body, "include_stop_str_in_output": "yes"}, timeout=60)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "include_stop_str_in_output"


def test_the_openai_engine_sends_token_ids_and_the_vllm_options():
    sent = []

    def upstream(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(200, json={"model": "m", "choices": [{"text": "a</x>b", "message": {"content": "a</x>b"},
                                                                    "finish_reason": "stop"}]})

    engine = OpenAIEngine("http://upstream/v1", "m", api_key_env=None, transport=httpx.MockTransport(upstream))
    try:
        ids, chat = engine.generate([GenerationRequest(prompt_token_ids=[5, 6], max_tokens=3, stop=["</x>"], include_stop_str_in_output=True),
                                     GenerationRequest(messages=[{"role": "user", "content": "x"}], max_tokens=3, add_generation_prompt=False)])
    finally:
        engine.close()
    (completion_body,), (chat_body,) = [body for body in sent if "prompt" in body], [body for body in sent if "messages" in body]
    assert completion_body["prompt"] == [5, 6] and completion_body["include_stop_str_in_output"] is True and ids.text == "a</x>"
    assert chat_body["add_generation_prompt"] is False and "include_stop_str_in_output" not in chat_body and chat.text == "a</x>b"


@pytest.fixture(scope="module")
def thinking_engine(small_model, tmp_path_factory):
    """The small model with a chat template that reads `enable_thinking`, as Qwen3's does (the small model's reads none)."""
    import shutil

    from actors.engines.transformers_engine import TransformersEngine

    folder = tmp_path_factory.mktemp("thinking") / "small-qwen3"
    shutil.copytree(small_model, folder)
    template = folder / "chat_template.jinja"
    template.write_text(template.read_text(encoding="utf-8") + THINKING_OFF + NO_USER_QUERY + REPEAT, encoding="utf-8")
    return TransformersEngine(folder, device="cpu")


def test_chat_template_kwargs_are_the_templates_variables(thinking_engine):
    messages = [{"role": "user", "content": "rename fetch_user"}]
    plain = one(thinking_engine, messages=messages)
    off = one(thinking_engine, messages=messages, chat_template_kwargs={"enable_thinking": False})
    rendered = thinking_engine.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, enable_thinking=False)
    assert rendered.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert off.prompt_tokens == len(thinking_engine.tokenizer(rendered, add_special_tokens=False)["input_ids"]) > plain.prompt_tokens
    unread = one(thinking_engine, messages=messages, chat_template_kwargs={"enable_thinking": True, "unread": 1})
    assert (unread.prompt_tokens, unread.token_ids) == (plain.prompt_tokens, plain.token_ids)  # as vLLM: nothing read, nothing changed
    for refused in ({"prompt": PROMPT, "chat_template_kwargs": {}}, {"messages": messages, "chat_template_kwargs": {"tokenize": True}}):
        with pytest.raises(ValueError, match="chat_template_kwargs"):
            GenerationRequest(**refused)


def test_the_front_takes_chat_template_kwargs_on_chat_only(thinking_engine):
    from serve_apps.generate.service import GenerateService
    from serve_apps.generate.settings import GenerateSettings

    service = GenerateService(GenerateSettings(served_model_name="small", embed_app=None), engine=thinking_engine)
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    status, plain = post(service, "/v1/chat/completions", chat)
    status_off, off = post(service, "/v1/chat/completions", {**chat, "chat_template_kwargs": {"enable_thinking": False}})
    assert (status, status_off) == (200, 200)
    assert off["usage"]["prompt_tokens"] == plain["usage"]["prompt_tokens"] + len(thinking_engine.tokenizer("<think>\n\n</think>\n\n")["input_ids"])
    for path, body, words in [("/v1/chat/completions", {**chat, "chat_template_kwargs": "enable_thinking=false"}, "must be an object"),
                              ("/v1/chat/completions", {**chat, "chat_template_kwargs": {"add_generation_prompt": False}}, "may not set"),
                              ("/v1/completions", {"prompt": PROMPT, "chat_template_kwargs": {}}, "unrecognized request argument")]:
        status, answer = post(service, path, body)
        assert status == 400 and answer["error"]["param"] == "chat_template_kwargs" and words in answer["error"]["message"], answer


def test_messages_the_chat_template_refuses_are_the_requests_fault(thinking_engine):
    from serve_apps.generate.service import GenerateService
    from serve_apps.generate.settings import GenerateSettings

    system_only = [{"role": "system", "content": "you refactor code"}]
    (completion,) = thinking_engine.generate([GenerationRequest(messages=system_only, max_tokens=2)])
    assert completion.finish_reason == "error" and completion.invalid_request and "No user query found" in completion.error
    service = GenerateService(GenerateSettings(served_model_name="small", embed_app=None), engine=thinking_engine)
    status, answer = post(service, "/v1/chat/completions", {"messages": system_only, "max_tokens": 2})
    assert status == 400 and "No user query found in messages" in answer["error"]["message"], answer
    assert answer["error"]["type"] == "invalid_request_error"


def test_a_template_that_cannot_compute_with_a_value_is_the_requests_fault(thinking_engine):
    from serve_apps.generate.service import GenerateService
    from serve_apps.generate.settings import GenerateSettings

    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    assert one(thinking_engine, messages=chat["messages"], chat_template_kwargs={"repeat": 3}).prompt_tokens > 0
    (completion,) = thinking_engine.generate([GenerationRequest(**chat, chat_template_kwargs={"repeat": "three"})])
    assert completion.finish_reason == "error" and completion.invalid_request and "TypeError" in completion.error
    service = GenerateService(GenerateSettings(served_model_name="small", embed_app=None), engine=thinking_engine)
    status, answer = post(service, "/v1/chat/completions", {**chat, "chat_template_kwargs": {"repeat": "three"}})
    assert status == 400 and "could not render these messages" in answer["error"]["message"], answer


def post(service, path: str, body: dict) -> tuple[int, dict]:
    """The front's answer to a POST, called in this process (no Serve)."""
    import asyncio

    from starlette.requests import Request

    async def receive():
        return {"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}

    scope = {"type": "http", "method": "POST", "path": "/generate" + path, "root_path": "/generate", "headers": [], "query_string": b""}
    response = asyncio.run(service(Request(scope, receive)))
    return response.status_code, json.loads(response.body)
