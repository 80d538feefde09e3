"""OpenAI's tool calling through the front, as vLLM's server answers it with the `hermes` tool parser: tools listed by
the chat template, `<tool_call>` blocks read back as `tool_calls` (answered and streamed, live and buffered), "required"
and a named function held to JSON by structured outputs, and the openai engine carrying an upstream's calls; and vLLM's
`qwen3` reasoning parser (`generate.reasoning_parser`), whose `reasoning` comes before the content and the calls."""

from __future__ import annotations

import itertools
import json
import shutil

import httpx
import openai
import pytest
from test_prompt_forms import post

from actors.engines.hermes import calls_text
from actors.engines.openai_engine import OpenAIEngine
from actors.engines.types import GenerationRequest, render_chat
from serve_apps.generate import openai_api, tool_calls

LIST_FILES = {"type": "function", "function": {"name": "list_files", "description": "list a folder",
                                               "parameters": {"type": "object", "additionalProperties": False, "required": ["path"],
                                                              "properties": {"path": {"enum": ["src", "tests"]}}}}}
READ_FILE = {"type": "function", "function": {"name": "read_file", "parameters": {
    "type": "object", "additionalProperties": False, "required": ["name"], "properties": {"name": {"enum": ["a.py", "b.py"]}}}}}
TOOLS = [LIST_FILES, READ_FILE]
ASK = [{"role": "user", "content": "what is in src?"}]
CALL = '<tool_call>\n{"name": "list_files", "arguments": {"path": "src"}}\n</tool_call>'
# Qwen3's way of listing tools and replaying calls, cut to what the tests look at
TOOL_TEMPLATE = (
    "{% if tools %}<|im_start|>system\n<tools>{% for tool in tools %}\n{{ tool | tojson }}{% endfor %}\n</tools><|im_end|>\n{% endif %}"
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message.tool_calls %}{% for call in message.tool_calls %}<tool_call>\n"
    "{\"name\": \"{{ call.function.name }}\", \"arguments\": {{ call.function.arguments | tojson }}}\n</tool_call>{% endfor %}"
    "{% elif message.role == 'tool' %}<tool_response>{{ message.tool_call_id }}: {{ message['content'] }}</tool_response>"
    "{% else %}{{ message['content'] }}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture(scope="module")
def tool_engine(small_model, tmp_path_factory):
    from actors.engines.transformers_engine import TransformersEngine

    folder = tmp_path_factory.mktemp("tools") / "small-qwen3"
    shutil.copytree(small_model, folder)
    (folder / "chat_template.jinja").write_text(TOOL_TEMPLATE, encoding="utf-8")
    return TransformersEngine(folder, device="cpu")


@pytest.fixture(scope="module")
def service(tool_engine):
    from serve_apps.generate.service import GenerateService
    from serve_apps.generate.settings import GenerateSettings

    return GenerateService(GenerateSettings(served_model_name="small", embed_app=None), engine=tool_engine)


def parsed(body: dict, reasoning_parser: str | None = None) -> openai_api.Parsed:
    return openai_api.parse(body, True, model_name="small", max_tokens_limit=4096, max_choices=4, reasoning_parser=reasoning_parser)


def rendered(engine, body: dict) -> str:
    return render_chat(engine.tokenizer, parsed(body).requests[0], tokenize=False)


def test_the_template_lists_the_tools_and_replays_earlier_calls_with_their_arguments_as_objects(tool_engine):
    history = [*ASK, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "list_files", "arguments": '{"path": "src"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "a.py b.py"}]
    prompt = rendered(tool_engine, {"messages": history, "tools": TOOLS})
    assert json.dumps(LIST_FILES) in prompt and json.dumps(READ_FILE) in prompt
    assert '"arguments": {"path": "src"}' in prompt  # the JSON text read into an object, as vLLM gives templates
    assert "<tool_response>call_1: a.py b.py</tool_response>" in prompt
    assert "<tools>" not in rendered(tool_engine, {"messages": history, "tools": TOOLS, "tool_choice": "none"})
    assert "<tools>" not in rendered(tool_engine, {"messages": ASK})


def test_hermes_blocks_are_read_as_calls_and_what_is_not_a_call_stays_text():
    auto = tool_calls.ToolUse("auto", TOOLS)
    content, calls = tool_calls.split("Let me look.\n" + CALL + '\n<tool_call>{"name": "read_file", "arguments": {"name": "a.py"}}', auto)
    assert content == "Let me look.\n" and [call["function"]["name"] for call in calls] == ["list_files", "read_file"]
    assert [json.loads(call["function"]["arguments"]) for call in calls] == [{"path": "src"}, {"name": "a.py"}]  # the unclosed last one too
    assert len({call["id"] for call in calls}) == 2 and all(call["type"] == "function" for call in calls)
    assert tool_calls.split(CALL, auto)[0] is None  # nothing before the call: content null, as vLLM answers
    assert tool_calls.split("<tool_call>{not json}</tool_call>", auto) == ("<tool_call>{not json}</tool_call>", [])
    assert len(tool_calls.split(CALL + CALL, tool_calls.ToolUse("auto", TOOLS, parallel=False))[1]) == 1
    assert tool_calls.ToolUse("required", TOOLS, parallel=False).schema()["maxItems"] == 1  # parallel_tool_calls false: one call
    assert tool_calls.split('[{"name": "read_file", "parameters": {"name": "b.py"}}]', tool_calls.ToolUse("required", TOOLS))[1][0]["function"] \
        == {"name": "read_file", "arguments": '{"name": "b.py"}'}
    assert tool_calls.split('{"path": "tests"}', tool_calls.ToolUse("function", TOOLS, name="list_files"))[1][0]["function"] \
        == {"name": "list_files", "arguments": '{"path": "tests"}'}


def test_streamed_content_stops_where_a_call_begins():
    from serve_apps.generate.chat_message import LiveMessage

    def content_sent(pieces: list[str]) -> list[str]:
        live = LiveMessage(parsed({"messages": ASK, "tools": TOOLS}))
        return ["".join(delta.get("content", "") for delta in live.add(piece)) for piece in pieces]

    assert content_sent(["Let me", " look <", "tool", "_call>\n{", '"name"']) == ["Let me", " look ", "", "", ""]
    assert content_sent(["a <", "b"]) == ["a ", "<b"]  # held back only while it could still be a call


def forced(text: str) -> dict:
    """A body whose answer is exactly `text` (vLLM's guided choice), so the model's output is known."""
    return {"messages": ASK, "tools": TOOLS, "max_tokens": 200, "guided_choice": [text]}


def test_an_answer_with_calls_is_answered_as_tool_calls(service):
    status, answer = post(service, "/v1/chat/completions", forced("Let me look." + CALL))
    assert status == 200, answer
    (choice,) = answer["choices"]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] == "Let me look."
    (call,) = choice["message"]["tool_calls"]
    assert call["function"]["name"] == "list_files" and json.loads(call["function"]["arguments"]) == {"path": "src"}
    status, answer = post(service, "/v1/chat/completions", {**forced("Let me look." + CALL), "tool_choice": "none"})
    assert answer["choices"][0]["message"] == {"role": "assistant", "content": "Let me look." + CALL}  # "none": text, as it was written
    assert answer["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("choice, name", [("required", None), ({"type": "function", "function": {"name": "read_file"}}, "read_file")])
def test_a_forced_choice_is_held_to_the_tools_schemas(service, choice, name):
    for seed in range(3):
        status, answer = post(service, "/v1/chat/completions", {"messages": ASK, "tools": TOOLS, "tool_choice": choice,
                                                                "max_tokens": 120, "temperature": 1.0, "seed": seed})
        assert status == 200, answer
        message = answer["choices"][0]["message"]
        assert message["content"] == "" and message["tool_calls"], message
        for call in message["tool_calls"]:
            arguments = json.loads(call["function"]["arguments"])
            assert call["function"]["name"] == (name or call["function"]["name"]) in ("list_files", "read_file")
            assert arguments in ([{"path": "src"}, {"path": "tests"}] if call["function"]["name"] == "list_files" else [{"name": "a.py"}, {"name": "b.py"}])
        assert answer["choices"][0]["finish_reason"] == ("stop" if name else "tool_calls")


def test_a_forced_choice_and_another_constraint_are_refused(service):
    status, answer = post(service, "/v1/chat/completions", {"messages": ASK, "tools": TOOLS, "tool_choice": "required",
                                                            "response_format": {"type": "json_object"}})
    assert status == 400 and answer["error"]["param"] == "tool_choice", answer


@pytest.mark.parametrize("logprobs", [False, True])  # live from the engine, and from the finished completion
def test_streamed_calls_arrive_after_the_content_through_the_sdk(service, logprobs):
    body = {**forced("Let me look." + CALL), "stream": True, "logprobs": logprobs}
    status, events = post_stream(service, body)
    assert status == 200
    content = "".join(choice["delta"].get("content") or "" for event in events for choice in event["choices"])
    calls = [call for event in events for choice in event["choices"] for call in choice["delta"].get("tool_calls", [])]
    assert content == "Let me look." and "<tool_call>" not in json.dumps(events[:-1])
    (call,) = calls
    assert call["index"] == 0 and call["function"]["name"] == "list_files" and json.loads(call["function"]["arguments"]) == {"path": "src"}
    assert events[-1]["choices"][0]["finish_reason"] == "tool_calls"


def post_stream(service, body: dict) -> tuple[int, list[dict]]:
    import asyncio

    from starlette.requests import Request

    async def run():
        raw = json.dumps(body).encode()
        scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "root_path": "", "headers": [], "query_string": b""}

        async def receive():
            return {"type": "http.request", "body": raw, "more_body": False}

        response = await service(Request(scope, receive))
        chunks = [chunk if isinstance(chunk, str) else chunk.decode() async for chunk in response.body_iterator]
        lines = "".join(chunks).split("\n")
        return response.status_code, [json.loads(line[6:]) for line in lines if line.startswith("data: {")]

    return asyncio.run(run())


def test_the_sdk_reads_calls_from_the_running_front(front_url):
    """The Serve front (plain small template) through OpenAI's SDK: a forced answer's call, answered and streamed."""
    with openai.OpenAI(base_url=f"{front_url}/v1", api_key="unused", max_retries=0, timeout=120) as client:
        body = forced("ok " + CALL)
        answer = client.chat.completions.create(model="small", messages=body["messages"], tools=TOOLS, max_tokens=200,
                                                extra_body={"guided_choice": body["guided_choice"]})
        (call,) = answer.choices[0].message.tool_calls
        assert (call.function.name, json.loads(call.function.arguments), answer.choices[0].finish_reason) == ("list_files", {"path": "src"}, "tool_calls")
        # the SDK's own stream helper accumulates the deltas into the final message, as it does against OpenAI
        with client.chat.completions.stream(model="small", messages=body["messages"], tools=TOOLS, max_tokens=200,
                                            extra_body={"guided_choice": body["guided_choice"]}) as stream:
            kinds = {event.type for event in stream}
            final = stream.get_final_completion()
        (streamed,) = final.choices[0].message.tool_calls
        assert (streamed.function.name, json.loads(streamed.function.arguments)) == ("list_files", {"path": "src"})
        assert final.choices[0].message.content == "ok " and final.choices[0].finish_reason == "tool_calls"
        assert {"content.delta", "tool_calls.function.arguments.done"} <= kinds


def test_the_openai_engine_sends_tools_and_writes_an_upstreams_calls_back_as_hermes_text():
    sent = []

    def upstream(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        call = {"id": "call_9", "type": "function", "function": {"name": "list_files", "arguments": '{"path": "src"}'}}
        return httpx.Response(200, json={"model": "m", "usage": {"prompt_tokens": 3, "completion_tokens": 2}, "choices": [
            {"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": None, "tool_calls": [call]}}]})

    engine = OpenAIEngine("http://upstream/v1", "m", transport=httpx.MockTransport(upstream), api_key_env=None)
    (completion,) = engine.generate([GenerationRequest(messages=ASK, tools=TOOLS, max_tokens=20)])
    assert sent[0]["tools"] == TOOLS and completion.error is None
    assert tool_calls.split(completion.text, tool_calls.ToolUse("auto", TOOLS))[1][0]["function"]["arguments"] == '{"path": "src"}'
    assert calls_text([{"function": {"name": "x", "arguments": "not json"}}]) == '<tool_call>\n{"name": "x", "arguments": "not json"}\n</tool_call>'


def test_tools_are_for_chat_and_a_named_choice_must_be_a_tool():
    with pytest.raises(ValueError, match="tools is for messages"):
        GenerationRequest(prompt="x", tools=TOOLS)
    for body, words in [({"messages": ASK, "tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "rm"}}}, "not among"),
                        ({"messages": ASK, "tools": TOOLS, "tool_choice": "sometimes"}, '"none", "auto", "required"'),
                        ({"messages": ASK, "tools": [{"type": "function", "function": {"name": "x", "parameters": "{}"}}]}, "JSON schema object"),
                        ({"messages": ASK, "tools": TOOLS, "parallel_tool_calls": "no"}, "true or false"),
                        ({"messages": [{"role": "assistant", "content": None, "tool_calls": "ls"}]}, "tool_calls must be a list")]:
        with pytest.raises(Exception, match=words):
            parsed(body)


THOUGHT = "<think>\nsrc holds the code\n</think>\n\n"


def answering(text: str, reasoning_parser: str | None = "qwen3"):
    """The front over an upstream that answers every chat with `text` (the small tokenizer marks think tags special,
    so its own model's text would lose them; Qwen3's does not)."""
    from serve_apps.generate.service import GenerateService
    from serve_apps.generate.settings import GenerateSettings

    def upstream(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"model": "m", "usage": {"prompt_tokens": 3, "completion_tokens": 9}, "choices": [
            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}]})

    engine = OpenAIEngine("http://upstream/v1", "m", transport=httpx.MockTransport(upstream), api_key_env=None)
    return GenerateService(GenerateSettings(served_model_name="small", embed_app=None, reasoning_parser=reasoning_parser), engine=engine)


def test_the_reasoning_parser_gives_the_thinking_apart_and_reads_calls_from_the_content():
    body = {"messages": ASK, "tools": TOOLS}
    status, answer = post(answering(THOUGHT + "Let me look." + CALL), "/v1/chat/completions", body)
    assert status == 200, answer
    message = answer["choices"][0]["message"]
    assert message["reasoning"] == "src holds the code" and message["content"] == "Let me look."
    assert message["tool_calls"][0]["function"]["name"] == "list_files" and answer["choices"][0]["finish_reason"] == "tool_calls"
    status, answer = post(answering(THOUGHT + "done"), "/v1/chat/completions", {"messages": ASK, "include_reasoning": False})
    assert answer["choices"][0]["message"] == {"role": "assistant", "content": "done", "reasoning": None}
    status, answer = post(answering(THOUGHT + "done", None), "/v1/chat/completions", {"messages": ASK})  # no parser: as written
    assert answer["choices"][0]["message"] == {"role": "assistant", "content": THOUGHT + "done"}


def test_a_streamed_answer_gives_reasoning_then_content_then_the_calls():
    status, events = post_stream(answering(THOUGHT + "Let me look." + CALL), {"messages": ASK, "tools": TOOLS, "stream": True})
    deltas = [choice["delta"] for event in events for choice in event["choices"]]
    assert [key for d in deltas for key in ("reasoning", "content", "tool_calls") if d.get(key)] == ["reasoning", "content", "tool_calls"]
    assert deltas[1]["reasoning"] == "src holds the code" and deltas[2]["content"] == "Let me look."
    assert "<think>" not in json.dumps(events) and events[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_live_deltas_join_to_the_whole_message_however_the_text_is_cut():
    from serve_apps.generate.chat_message import LiveMessage, message

    body = {"messages": ASK, "tools": TOOLS}
    for text, size in itertools.product((THOUGHT + "Let me look." + CALL, "thought\n</think>\n\nLet me look." + CALL,
                                         "<think>\nthought " + CALL), (1, 2, 5, 11)):  # tokens of any length
        whole, _ = message(text, parsed(body, "qwen3"), "stop")
        live = LiveMessage(parsed(body, "qwen3"))
        deltas = [delta for start in range(0, len(text), size) for delta in live.add(text[start:start + size])]
        rest, finish_reason = live.finish(text, "stop")
        deltas += rest
        joined = {key: "".join(d.get(key) or "" for d in deltas) for key in ("reasoning", "content")}
        assert joined == {"reasoning": whole["reasoning"] or "", "content": whole["content"] or ""}, (text, size)
        assert [d["tool_calls"][0]["function"]["name"] for d in deltas if "tool_calls" in d] == ["list_files"] and finish_reason == "tool_calls"
        assert all("<" not in (d.get("reasoning") or "") + (d.get("content") or "") for d in deltas), size  # never part of a tag


def test_reasoning_splits_as_vllms_qwen3_parser_does():
    from serve_apps.generate.reasoning import split

    assert split("<think>\nR\n</think>\n\nA") == ("R", "A")
    assert split("R\n</think>\n\nA") == ("R", "A")  # Qwen3-2507 thinking: the template opened the thought in the prompt
    assert split("<think>\nstill thinking") == ("still thinking", None)  # cut by max_tokens: all reasoning
    assert split("no tags at all") == ("no tags at all", None)  # vLLM 0.34 reads an answer as thinking until </think>
    assert split("<think>\n\n</think>\n\n") == (None, None)
    assert split("<think>\nR\n" + CALL) == ("R", CALL)  # a call ends the thinking; it is read from the content


def test_enable_thinking_false_leaves_the_answer_whole_and_streams_it_as_content():
    body = {"messages": ASK, "chat_template_kwargs": {"enable_thinking": False}}
    status, answer = post(answering("R\n</think>\n\nA"), "/v1/chat/completions", body)
    assert status == 200, answer
    assert answer["choices"][0]["message"] == {"role": "assistant", "content": "R\n</think>\n\nA", "reasoning": None}
    status, events = post_stream(answering("plain answer"), {**body, "stream": True})
    deltas = [choice["delta"] for event in events for choice in event["choices"]]
    assert "".join(d.get("content") or "" for d in deltas) == "plain answer" and not any(d.get("reasoning") for d in deltas)
    status, answer = post(answering("R\n</think>\n\nA"), "/v1/chat/completions", {"messages": ASK})  # thinking: split
    assert answer["choices"][0]["message"] == {"role": "assistant", "content": "A", "reasoning": "R"}
