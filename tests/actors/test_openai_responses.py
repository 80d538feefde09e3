"""OpenAI's Responses API on the generate front (`POST /v1/responses`), through OpenAI's own SDK: over the small embedded
model on the session's Serve front (its answers compared with the chat route's and the engine's), and over scripted
upstream answers in this process (what the chat path was sent, reasoning and tool calls), answered and streamed."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest
from test_tool_calls import CALL, THOUGHT

from actors.engines.openai_engine import OpenAIEngine
from actors.engines.types import GenerationRequest

LIST_FILES = {"type": "function", "name": "list_files", "description": "list a folder", "strict": True,
              "parameters": {"type": "object", "additionalProperties": False, "required": ["path"],
                             "properties": {"path": {"enum": ["src", "tests"]}}}}
AS_CHAT_TOOL = {"type": "function", "function": {key: LIST_FILES[key] for key in ("name", "description", "parameters", "strict")}}
INSTRUCTIONS = "answer in one line"
ASK = "rename fetch_user to load_user"


@pytest.fixture(scope="module")
def client(front_url):
    with openai.OpenAI(base_url=f"{front_url}/v1", api_key="unused", max_retries=0, timeout=120) as sdk:
        yield sdk


def forced(text: str) -> dict:
    """vLLM's structured outputs: the answer is exactly `text`, so what the small model says is known."""
    return {"structured_outputs": {"choice": [text]}}


def test_text_with_instructions_is_the_chat_answer_as_a_response(client, engine):
    answer = client.responses.create(model="small", instructions=INSTRUCTIONS, input=ASK, max_output_tokens=12, temperature=0.8,
                                     extra_body={"seed": 3})  # vLLM's
    (local,) = engine.generate([GenerationRequest(messages=[{"role": "system", "content": INSTRUCTIONS}, {"role": "user", "content": ASK}],
                                                  max_tokens=12, temperature=0.8, seed=3)])
    assert answer.id.startswith("resp_") and answer.object == "response" and answer.model == "small" and answer.created_at > 0
    assert answer.output_text == local.text
    (item,) = answer.output
    assert item.type == "message" and item.role == "assistant" and item.id.startswith("msg_")
    assert [(part.type, part.text) for part in item.content] == [("output_text", local.text)]
    cut = local.finish_reason == "length"
    assert (answer.status, item.status) == (("incomplete",) * 2 if cut else ("completed",) * 2)
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (local.prompt_tokens, local.completion_tokens)
    assert answer.usage.total_tokens == local.prompt_tokens + local.completion_tokens
    # the request's parameters, echoed as vLLM echoes them
    assert (answer.instructions, answer.temperature, answer.top_p, answer.max_output_tokens) == (INSTRUCTIONS, 0.8, 1.0, 12)
    assert (answer.tool_choice, answer.tools, answer.parallel_tool_calls, answer.previous_response_id) == ("none", [], True, None)


def test_a_multi_turn_input_list_is_the_same_conversation_on_chat(client):
    turns = [{"role": "developer", "content": INSTRUCTIONS},
             {"type": "message", "role": "user",
              "content": [{"type": "input_text", "text": "rename "}, {"type": "input_text", "text": "fetch_user"}]},
             {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "to what?"}]},
             {"role": "user", "content": "load_user"}]
    chat = [{"role": "system", "content": INSTRUCTIONS}, {"role": "user", "content": "rename fetch_user"},
            {"role": "assistant", "content": "to what?"}, {"role": "user", "content": "load_user"}]
    options = {"model": "small", "temperature": 1.0}
    answer = client.responses.create(input=turns, max_output_tokens=16, extra_body={"seed": 7}, **options)
    whole = client.chat.completions.create(messages=chat, max_tokens=16, seed=7, **options)
    assert answer.output_text == whole.choices[0].message.content
    assert answer.usage.input_tokens == whole.usage.prompt_tokens and answer.usage.output_tokens == whole.usage.completion_tokens


def test_max_output_tokens_cuts_the_answer_and_the_response_is_incomplete(client):
    options = {"model": "small", "input": ASK, "max_output_tokens": 3, "extra_body": {"ignore_eos": True}}
    answer = client.responses.create(**options)
    assert answer.status == "incomplete" and answer.incomplete_details.reason == "max_output_tokens"
    assert answer.output[0].status == "incomplete" and answer.usage.output_tokens == 3
    events = list(client.responses.create(**options, stream=True))
    assert events[-1].type == "response.incomplete" and events[-1].response.incomplete_details.reason == "max_output_tokens"
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert events[-1].response.output[0].status == "incomplete"


def test_streamed_events_come_in_order_and_the_sdk_accumulates_the_same_response(client):
    options = {"model": "small", "input": ASK, "max_output_tokens": 40, "extra_body": forced("all good, renamed")}
    with client.responses.stream(**options) as stream:
        events = list(stream)
        final = stream.get_final_response()
    whole = client.responses.create(**options)
    kinds = [event.type for event in events]
    deltas = kinds.count("response.output_text.delta")
    assert deltas >= 2  # live from the engine, piece by piece
    assert kinds == ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
                     *["response.output_text.delta"] * deltas, "response.output_text.done", "response.content_part.done",
                     "response.output_item.done", "response.completed"]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert events[0].response.status == "in_progress" and events[0].response.output == [] and events[0].response.id == final.id
    assert "".join(event.delta for event in events if event.type == "response.output_text.delta") == "all good, renamed"
    assert final.output_text == whole.output_text == "all good, renamed" and final.status == whole.status == "completed"
    assert final.output[0].id == events[2].item.id and final.usage.output_tokens == whole.usage.output_tokens


def test_json_schema_text_format_gives_a_valid_document(client):
    schema = {"type": "object", "additionalProperties": False, "required": ["verdict", "score"],
              "properties": {"verdict": {"enum": ["pass", "fail"]}, "score": {"type": "integer", "minimum": 0, "maximum": 9}}}
    text = {"format": {"type": "json_schema", "name": "grade", "schema": schema, "strict": True}}
    answer = client.responses.create(model="small", input="grade it", max_output_tokens=32, text=text,
                                     extra_body={"seed": 4})
    document = json.loads(answer.output_text)
    assert set(document) == {"verdict", "score"} and document["verdict"] in ("pass", "fail") and 0 <= document["score"] <= 9
    assert answer.text.format.type == "json_schema"


def test_a_function_call_round_trip_on_the_small_model(client):
    first = client.responses.create(model="small", input="what is in src?", tools=[LIST_FILES], max_output_tokens=200,
                                    extra_body=forced("ok " + CALL))
    message, call = first.output
    assert (message.type, first.output_text) == ("message", "ok ")
    assert (call.type, call.name, json.loads(call.arguments), call.status) == ("function_call", "list_files", {"path": "src"}, "completed")
    history = ["what is in src?", *first.output, {"type": "function_call_output", "call_id": call.call_id, "output": "a.py b.py"}]
    history = [{"role": "user", "content": history[0]}] + [item if isinstance(item, dict) else item.model_dump(exclude_none=True)
                                                           for item in history[1:]]
    second = client.responses.create(model="small", input=history, tools=[LIST_FILES], max_output_tokens=20, extra_body=forced("a.py"))
    assert second.output_text == "a.py" and second.status == "completed"
    assert second.usage.input_tokens > first.usage.input_tokens  # the call and its output are in the prompt


class FrontTransport(httpx.BaseTransport):
    """Requests to a GenerateService in this process, as Serve would hand them over (the route prefix /generate)."""

    def __init__(self, service):
        self.service = service

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        from starlette.requests import Request
        from starlette.responses import StreamingResponse

        async def run():
            body = request.read()

            async def receive():
                return {"type": "http.request", "body": body, "more_body": False}

            scope = {"type": "http", "method": request.method, "path": request.url.path, "root_path": "/generate",
                     "headers": [(k.lower(), v) for k, v in request.headers.raw], "query_string": b""}
            response = await self.service(Request(scope, receive))
            if isinstance(response, StreamingResponse):
                content = b"".join([chunk if isinstance(chunk, bytes) else chunk.encode() async for chunk in response.body_iterator])
            else:
                content = response.body
            return httpx.Response(response.status_code, headers=response.raw_headers, content=content)

        return asyncio.run(run())


def scripted(*answers, reasoning_parser: str | None = None):
    """An SDK client of the front over an upstream that gives `answers` in turn (text, or a chat message with tool
    calls; a length finish when the text ends with "…"), and the chat bodies the upstream was sent."""
    from serve_apps.generate.service import GenerateService
    from serve_apps.generate.settings import GenerateSettings

    sent, queue = [], list(answers)

    def upstream(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        said = queue.pop(0)
        message = said if isinstance(said, dict) else {"role": "assistant", "content": said}
        finish = "tool_calls" if message.get("tool_calls") else "length" if (message["content"] or "").endswith("…") else "stop"
        return httpx.Response(200, json={"model": "m", "usage": {"prompt_tokens": 11 * len(sent), "completion_tokens": 5},
                                         "choices": [{"index": 0, "finish_reason": finish, "message": message}]})

    engine = OpenAIEngine("http://upstream/v1", "m", transport=httpx.MockTransport(upstream), api_key_env=None)
    service = GenerateService(GenerateSettings(served_model_name="small", embed_app=None, reasoning_parser=reasoning_parser), engine=engine)
    sdk = openai.OpenAI(base_url="http://front/generate/v1", api_key="unused", max_retries=0,
                        http_client=httpx.Client(transport=FrontTransport(service)))
    return sdk, sent


UPSTREAM_CALL = {"role": "assistant", "content": None, "tool_calls": [
    {"id": "call_7", "type": "function", "function": {"name": "list_files", "arguments": '{"path": "src"}'}}]}


def test_a_function_call_round_trip_reaches_the_chat_path_as_chat_messages_and_tools():
    sdk, sent = scripted(UPSTREAM_CALL, "src holds a.py and b.py")
    first = sdk.responses.create(model="small", instructions=INSTRUCTIONS, input="what is in src?", tools=[LIST_FILES],
                                 tool_choice="auto", parallel_tool_calls=False, max_output_tokens=50, temperature=0.3, top_p=0.9)
    (call,) = first.output
    assert (call.type, call.name, call.arguments, call.status) == ("function_call", "list_files", '{"path": "src"}', "completed")
    assert call.id.startswith("fc_") and call.call_id and first.status == "completed" and first.output_text == ""
    assert sent[0]["messages"] == [{"role": "system", "content": INSTRUCTIONS}, {"role": "user", "content": "what is in src?"}]
    assert sent[0]["tools"] == [AS_CHAT_TOOL]
    assert (sent[0]["max_tokens"], sent[0]["temperature"], sent[0]["top_p"]) == (50, 0.3, 0.9)
    assert (first.parallel_tool_calls, first.tool_choice, first.tools[0].name) == (False, "auto", "list_files")
    second = sdk.responses.create(model="small", tools=[LIST_FILES], input=[
        {"role": "user", "content": "what is in src?"}, call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": "a.py b.py"}])
    assert second.output_text == "src holds a.py and b.py" and second.output[0].status == "completed"
    assistant, tool = sent[1]["messages"][1:]
    assert assistant["role"] == "assistant" and not assistant["content"]
    # the arguments as an object, as the chat path gives them to chat templates
    assert [(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in assistant["tool_calls"]] == \
        [(call.call_id, "list_files", {"path": "src"})]
    assert (tool["role"], tool["tool_call_id"], tool["content"]) == ("tool", call.call_id, "a.py b.py")
    assert (second.usage.input_tokens, second.usage.output_tokens, second.usage.total_tokens) == (22, 5, 27)


def test_reasoning_text_and_calls_stream_as_their_items_and_accumulate_to_the_answer():
    text = THOUGHT + "Let me look." + CALL
    sdk, _ = scripted(text, text, reasoning_parser="qwen3")
    whole = sdk.responses.create(model="small", input="what is in src?", tools=[LIST_FILES])
    assert [item.type for item in whole.output] == ["reasoning", "message", "function_call"]
    assert whole.output[0].content[0].text == "src holds the code" and whole.output_text == "Let me look."
    assert json.loads(whole.output[2].arguments) == {"path": "src"}
    with sdk.responses.stream(model="small", input="what is in src?", tools=[LIST_FILES]) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [event.type for event in events]
    item = ["response.output_item.added", "response.content_part.added"]
    done = ["response.content_part.done", "response.output_item.done"]
    assert kinds == ["response.created", "response.in_progress",
                     *item, "response.reasoning_text.delta", "response.reasoning_text.done", *done,
                     *item, "response.output_text.delta", "response.output_text.done", *done,
                     "response.output_item.added", "response.function_call_arguments.delta", "response.function_call_arguments.done",
                     "response.output_item.done", "response.completed"]
    assert [event.output_index for event in events if event.type == "response.output_item.added"] == [0, 1, 2]
    assert [item.type for item in final.output] == ["reasoning", "message", "function_call"]
    assert final.output_text == "Let me look." and final.output[0].content[0].text == "src holds the code"
    assert final.output[2].arguments == whole.output[2].arguments and final.output[2].call_id == events[-2].item.call_id
    assert [e.item.id for e in events if e.type == "response.output_item.done"] == [i.id for i in final.output]


def test_a_scripted_answer_cut_by_the_limit_is_incomplete():
    sdk, _ = scripted("half an answ…", "half an answ…")
    answer = sdk.responses.create(model="small", input="x", max_output_tokens=5)
    assert (answer.status, answer.incomplete_details.reason, answer.output[0].status) == ("incomplete", "max_output_tokens", "incomplete")
    events = list(sdk.responses.create(model="small", input="x", max_output_tokens=5, stream=True))
    assert events[-1].type == "response.incomplete" and events[-1].response.output[0].content[0].text == "half an answ…"


@pytest.mark.parametrize("options,status,param,words", [
    ({"previous_response_id": "resp_123"}, 404, "previous_response_id", "keeps no responses"),
    ({"background": True}, 400, "background", "keeps no responses"),
    ({"conversation": "conv_1"}, 400, "conversation", "not supported"),
    ({"tools": [{"type": "web_search"}]}, 400, "tools", "'web_search' tools are not supported"),
    ({"tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}]}, 400, "tools", "no built-in tools"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "http://x/y.png"}]}]}, 400, "input", "input_image"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, 400, "input", "keeps no responses"),
    ({"max_output_tokens": 10**9}, 400, "max_output_tokens", "from 1 to 4096"),
    ({"tool_choice": "required"}, 400, "tool_choice", '"tools"'),
    ({"text": {"format": {"type": "yaml"}}}, 400, "text", "text.format.type"),
    ({"include": ["message.output_text.logprobs"]}, 400, "include", "nothing can be included"),
    ({"reasoning": {"effort": "high"}}, 400, "reasoning", "enable_thinking"),
    ({"truncation": "auto"}, 400, "truncation", "disabled"),
    ({"extra_body": {"max_token": 5}}, 400, "max_token", "unrecognized request argument"),
    ({"model": "gpt-5"}, 404, None, "not served here"),
])
def test_what_cannot_be_served_is_refused_in_openais_shape_naming_the_parameter(options, status, param, words):
    sdk, sent = scripted()
    with pytest.raises(openai.APIStatusError) as raised:
        sdk.responses.create(**{"model": "small", "input": "x", **options})
    assert raised.value.status_code == status and sent == []
    assert raised.value.body["param"] == param and words in raised.value.body["message"], raised.value.body
    assert raised.value.body["type"] == "invalid_request_error"


def test_store_and_other_hints_are_accepted_and_change_nothing():
    sdk, sent = scripted("fine", "fine")
    plain = sdk.responses.create(model="small", input="x")
    hinted = sdk.responses.create(model="small", input="x", store=True, user="u1", metadata={"run": "7"}, service_tier="auto",
                                  safety_identifier="s", prompt_cache_key="k", text={"format": {"type": "text"}})
    assert plain.output_text == hinted.output_text == "fine" and sent[0] == sent[1]
    assert (hinted.metadata, hinted.user) == ({"run": "7"}, "u1")


def test_usage_counts_the_thinking_tokens_up_to_the_end_of_the_thought():
    from actors.engines.types import Completion
    from serve_apps.generate import responses_api

    class Tokenizer:
        unk_token_id = 0

        @staticmethod
        def convert_tokens_to_ids(token):
            return {"</think>": 9}.get(token, 0)

    _, parsed = responses_api.parse({"input": "x"}, model_name="small", max_tokens_limit=64, reasoning_parser="qwen3")
    thought = Completion(text="R\n</think>\n\nA", token_ids=[5, 6, 9, 7, 8], prompt_tokens=4, completion_tokens=5)
    cut = Completion(text="<think>\nstill thinking", token_ids=[5, 6, 7], prompt_tokens=4, completion_tokens=3, finish_reason="length")
    assert responses_api.usage(parsed, thought, Tokenizer())["output_tokens_details"] == {"reasoning_tokens": 3}
    assert responses_api.usage(parsed, cut, Tokenizer())["output_tokens_details"] == {"reasoning_tokens": 3}  # all thinking
    _, plain = responses_api.parse({"input": "x"}, model_name="small", max_tokens_limit=64, reasoning_parser=None)
    assert responses_api.usage(plain, thought, Tokenizer())["output_tokens_details"] == {"reasoning_tokens": 0}


def test_an_engine_that_fails_mid_stream_ends_the_events_with_an_error_the_sdk_raises(engine):
    """Live from an engine in the replica: what was sampled is sent, then the failure, in the shape chat streams use."""
    from serve_apps.generate.service import GenerateService
    from serve_apps.generate.settings import GenerateSettings

    class Failing:
        name, model, tokenizer = "failing", "small", engine.tokenizer

        def generate(self, requests):
            raise AssertionError("the stream is live")

        def generate_streaming(self, request, on_token, cancelled=None):
            for token in engine.tokenizer.encode("hello there"):
                on_token(token)
            raise RuntimeError("the GPU fell off the bus")

        def health(self):
            return {"engine": self.name}

    service = GenerateService(GenerateSettings(served_model_name="small", embed_app=None), engine=Failing())
    sdk = openai.OpenAI(base_url="http://front/generate/v1", api_key="unused", max_retries=0,
                        http_client=httpx.Client(transport=FrontTransport(service)))
    events = []
    with pytest.raises(openai.APIError, match="the GPU fell off the bus"):
        for event in sdk.responses.create(model="small", input="x", stream=True):
            events.append(event)
    assert [event.type for event in events][:4] == ["response.created", "response.in_progress", "response.output_item.added",
                                                    "response.content_part.added"]
    assert "".join(event.delta for event in events if event.type == "response.output_text.delta") == "hello there"
    assert service.metrics.counts["streams_hung_up"] == 0
