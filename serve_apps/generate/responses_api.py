"""OpenAI's Responses API (`POST /v1/responses`) as vLLM 0.34's server answers it, as a translation over the chat path.

`parse` turns a Responses body into a chat body and parses that with `openai_api.parse`: `instructions` become a system
message first; `input` (a string: one user message; or items: messages of the roles user, system, developer and
assistant, their content a string or `input_text`/`output_text` parts, `function_call` items as the assistant's
`tool_calls`, merged into the assistant message before them, and `function_call_output` items as tool messages; a last
assistant message whose status is `in_progress` or `incomplete` is continued, as vLLM does); `max_output_tokens` is
`max_tokens`; the flat function tools (`{"type": "function", "name", "parameters", ...}`) are chat tools, a named
`tool_choice` (`{"type": "function", "name"}`) chat's; `text.format` (`text`, `json_object`, `json_schema`) is
`response_format`. `temperature`, `top_p`, `parallel_tool_calls`, `seed`, `stop`, `stream` and vLLM's sampling extras,
`structured_outputs`, `chat_template_kwargs` and `include_reasoning` are chat's own.

`response` makes the chat answer's message a Response object: a `reasoning` item (what the front's reasoning parser split
off), a `message` item with `output_text` content, `function_call` items; status `incomplete` (reason
`max_output_tokens`) when the answer was cut by the limit; `usage` in input and output tokens; the request's parameters
echoed as vLLM echoes them (the sampling ones as applied).

Refused, each naming its parameter, as vLLM does with no response store (`VLLM_ENABLE_RESPONSES_API_STORE` unset):
`previous_response_id` (404: no response is ever stored), `background` (400); and, where vLLM would do something this
front cannot: `conversation`, `prompt` (templates), tools other than functions (vLLM drops built-in tools without a
tool server: the answer would not be what they ask for), `tool_choice` other than none/auto/required/a function, items
other than the above (`item_reference` needs stored items; images, files and audio: the models here read text),
encrypted reasoning, `include` (log-probabilities, encrypted reasoning), `top_logprobs`, `truncation: auto`,
`reasoning.effort`/`summary`, `text.verbosity` other than medium, and any field the route does not know.
Accepted and ignored: `store` (vLLM answers as though it were false), `user`, `metadata`, `service_tier`,
`safety_identifier`, `max_tool_calls`, the `prompt_cache_*` hints, `stream_options`; earlier reasoning items (the chat
template is given no past thinking, as on chat).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from actors.engines.types import Completion
from serve_apps.generate import chat_message, openai_api, reasoning
from serve_apps.generate.openai_checks import invalid
from serve_apps.http import HTTPError

PASSED = {"model", "temperature", "top_p", "parallel_tool_calls", "seed", "stop", "stream", "top_k", "min_p",
          "repetition_penalty", "presence_penalty", "frequency_penalty", "logit_bias", "stop_token_ids", "ignore_eos",
          "skip_special_tokens", "include_stop_str_in_output", "structured_outputs", "chat_template_kwargs", "include_reasoning"}
"""Fields a chat request takes as they are."""
IGNORED = {"store", "user", "metadata", "service_tier", "safety_identifier", "max_tool_calls", "prompt_cache_key",
           "prompt_cache_retention", "prompt_cache_options", "stream_options"}
FIELDS = PASSED | IGNORED | {"input", "instructions", "max_output_tokens", "tools", "tool_choice", "text", "include", "top_logprobs",
                             "truncation", "reasoning", "previous_response_id", "background", "conversation", "prompt"}
NO_STORE = "this server keeps no responses (as vLLM's without VLLM_ENABLE_RESPONSES_API_STORE)"
# what a chat error names, in the Responses request's terms
CHAT_NAMES = {"messages": "input", "max_tokens": "max_output_tokens", "response_format": "text"}
ROLES = ("user", "system", "developer", "assistant")


@dataclass
class Asked:
    """What a Responses request asked, beyond its chat request: what its Response echoes."""

    body: dict[str, Any]
    tool_choice: Any
    id: str = field(default_factory=lambda: f"resp_{uuid.uuid4().hex}")
    created_at: int = field(default_factory=lambda: int(time.time()))


def parse(body: Any, *, model_name: str, max_tokens_limit: int, reasoning_parser: str | None) -> tuple[Asked, openai_api.Parsed]:
    """The request, understood: what to echo, and its chat request parsed; HTTPError for what cannot be served."""
    if not isinstance(body, dict):
        raise invalid("the body must be a JSON object")
    _refuse(body)
    chat = {name: body[name] for name in PASSED if name in body}
    messages, continued = _input(body)
    chat["messages"] = messages
    if continued:
        chat.update(continue_final_message=True, add_generation_prompt=False)
    limit = body.get("max_output_tokens")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= max_tokens_limit):
        raise invalid(f'"max_output_tokens" must be an integer from 1 to {max_tokens_limit} (this server\'s limit), got {limit!r}',
                      "max_output_tokens")
    chat["max_tokens"] = limit
    tools, choice = _tools(body.get("tools")), body.get("tool_choice")
    if tools:
        chat["tools"] = tools
    if not tools and choice in (None, "auto", "none"):
        choice = "none"  # as vLLM echoes a request without tools
    elif choice is not None:
        chat["tool_choice"] = _tool_choice(choice)
    chat["response_format"] = _text_format(body.get("text"))
    try:
        parsed = openai_api.parse(chat, True, model_name=model_name, max_tokens_limit=max_tokens_limit, max_choices=1,
                                  reasoning_parser=reasoning_parser)
    except HTTPError as exc:
        param = exc.body.get("param")
        if param in CHAT_NAMES:
            exc.body.update(param=CHAT_NAMES[param], message=exc.body["message"].replace(f'"{param}"', f'"{CHAT_NAMES[param]}"'))
        raise
    return Asked(body, choice if choice is not None else "auto"), parsed


def _refuse(body: dict[str, Any]) -> None:
    if body.get("previous_response_id") is not None:
        raise HTTPError(404, "not_found", f"Response with id {body['previous_response_id']!r} not found: {NO_STORE}; send the "
                                          "conversation so far in \"input\"", param="previous_response_id")
    if body.get("background"):
        raise invalid(f'"background" is not supported: {NO_STORE} to be fetched later', "background")
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise invalid(f'unrecognized request argument supplied: "{unknown[0]}" (not a field /v1/responses takes here)', unknown[0])
    refused = {"conversation": f"conversations are not supported: {NO_STORE}; send the conversation in \"input\"",
               "prompt": "prompt templates are not supported", "include": "nothing can be included here (no output log-probabilities, "
               "no encrypted reasoning)"}
    for name, reason in refused.items():
        if body.get(name):
            raise invalid(f'"{name}": {reason}', name)
    if body.get("top_logprobs") not in (None, 0):
        raise invalid('"top_logprobs" is not supported here (output log-probabilities are not served)', "top_logprobs")
    if body.get("truncation") not in (None, "disabled"):
        raise invalid('"truncation" may only be "disabled" here: a prompt over the context is refused, not cut', "truncation")
    thinking = body.get("reasoning")
    if thinking is not None and (not isinstance(thinking, dict) or any(value is not None for value in thinking.values())):
        raise invalid('"reasoning" options are not supported here (the model thinks as its template says; Qwen3\'s: '
                      'chat_template_kwargs {"enable_thinking": false})', "reasoning")


def _text(content: Any, where: str) -> str:
    """A message's content: a string, or text parts (`input_text`, `output_text`)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise invalid(f"{where}.content must be a string or a list of input_text parts", "input")
    texts = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else type(part).__name__
        if kind in ("input_image", "input_file", "input_audio"):
            raise invalid(f"{where}.content: {kind} is not supported: the model here reads text only", "input")
        if kind not in ("input_text", "output_text") or not isinstance(part.get("text"), str):
            raise invalid(f"{where}.content: only input_text and output_text parts are supported, got {kind!r}", "input")
        texts.append(part["text"])
    return "".join(texts)


def _input(body: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
    """The chat messages of `instructions` and `input`, and whether the last (an unfinished assistant message) is continued."""
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise invalid('"instructions" must be a string', "instructions")
    if instructions:
        messages.append({"role": "system", "content": instructions})
    given = body.get("input")
    if isinstance(given, str):
        return messages + [{"role": "user", "content": given}], False
    if not isinstance(given, list) or not given:
        raise invalid('"input" must be a string or a non-empty list of input items', "input")
    continued = False
    for index, item in enumerate(given):
        where = f"input[{index}]"
        if not isinstance(item, dict):
            raise invalid(f"{where} must be an object (a message, function_call or function_call_output item)", "input")
        kind, last = item.get("type", "message"), messages[-1] if messages else None
        if kind == "message":
            if item.get("role") not in ROLES:
                raise invalid(f"{where}.role must be one of {list(ROLES)}, got {item.get('role')!r}", "input")
            text = _text(item.get("content"), where)
            if item["role"] == "assistant" and last is not None and last["role"] == "assistant" and not last["content"]:
                last["content"] = text  # after its own reasoning item
            else:
                messages.append({"role": item["role"], "content": text})
            continued = item["role"] == "assistant" and item.get("status") in ("in_progress", "incomplete")
            continue
        continued = False
        if kind == "function_call":
            if not all(isinstance(item.get(name), str) for name in ("call_id", "name", "arguments")):
                raise invalid(f'{where}: a function_call item needs "call_id", "name" and "arguments" (strings)', "input")
            call = {"id": item["call_id"], "type": "function", "function": {"name": item["name"], "arguments": item["arguments"]}}
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            if not isinstance(item.get("call_id"), str):
                raise invalid(f'{where}: a function_call_output item needs "call_id" (a string)', "input")
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": _text(item.get("output"), where)})
        elif kind == "reasoning":
            if item.get("encrypted_content"):
                raise invalid(f"{where}: encrypted reasoning is not supported", "input")
            if last is None or last["role"] != "assistant":
                messages.append({"role": "assistant", "content": ""})  # its text and calls follow
        elif kind == "item_reference":
            raise invalid(f"{where}: item references are not supported: {NO_STORE}", "input")
        else:
            raise invalid(f"{where}: input items of type {kind!r} are not supported here (messages, function_call, "
                          "function_call_output and reasoning are)", "input")
    return messages, continued


def _tools(tools: Any) -> list[dict[str, Any]]:
    """The Responses function tools in chat's shape; anything else refused."""
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise invalid('"tools" must be a list of {"type": "function", "name": ..., "parameters": ...}', "tools")
    chat = []
    for tool in tools:
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind != "function":
            raise invalid(f'"tools": {kind!r} tools are not supported here (no built-in tools are served); only '
                          '{"type": "function", "name": ..., "parameters": ...}', "tools")
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise invalid('"tools": each function needs a "name"', "tools")
        chat.append({"type": "function", "function": {key: tool[key] for key in ("name", "description", "parameters", "strict")
                                                      if tool.get(key) is not None}})
    return chat


def _tool_choice(choice: Any) -> Any:
    if choice in ("none", "auto", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise invalid('"tool_choice" must be "none", "auto", "required" or {"type": "function", "name": ...}', "tool_choice")


def _text_format(text: Any) -> dict[str, Any] | None:
    """`text.format` as chat's `response_format`."""
    if text is None:
        return None
    if not isinstance(text, dict) or text.get("verbosity") not in (None, "medium"):
        raise invalid('"text" must be {"format": ...}; "verbosity" other than "medium" is not supported here', "text")
    given = text.get("format")
    kind = given.get("type") if isinstance(given, dict) else None
    if given is None or kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        if not isinstance(given.get("name"), str):  # required, as OpenAI's and vLLM's ResponseFormatTextJSONSchemaConfig
            raise invalid('"text.format.name" is required: a string naming the schema', "text")
        if not isinstance(given.get("schema"), dict):
            raise invalid('"text.format.schema" must be a JSON schema object', "text")
        return {"type": "json_schema", "json_schema": {"name": given.get("name"), "schema": given["schema"]}}
    raise invalid('"text.format.type" must be "text", "json_object" or "json_schema"', "text")


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def item_status(finish_reason: str) -> str:
    """The status of an answer's last output item (the one a length finish cut)."""
    return "incomplete" if finish_reason == "length" else "completed"


def reasoning_item(item_id: str, text: str, status: str | None = None) -> dict[str, Any]:
    return {"id": item_id, "type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": text}],
            "encrypted_content": None, "status": status}


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": None}


def message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    return {"id": item_id, "type": "message", "role": "assistant", "status": status, "content": [output_text(text)] if text else []}


def function_call_item(item_id: str, call: dict[str, Any], status: str) -> dict[str, Any]:
    """A chat tool call (`tool_calls.py`) as an output item; its id is the call's `call_id`."""
    return {"id": item_id, "type": "function_call", "call_id": call["id"], "name": call["function"]["name"],
            "arguments": call["function"]["arguments"], "status": status}


def output_items(said: dict[str, Any], finish_reason: str) -> list[dict[str, Any]]:
    """The answer's message as output items: reasoning, the text, the calls; the last one's status says whether it was cut."""
    last, calls = item_status(finish_reason), said.get("tool_calls") or []
    items = [reasoning_item(new_id("rs"), said["reasoning"])] if said.get("reasoning") else []
    if said.get("content"):
        items.append(message_item(new_id("msg"), said["content"], "completed" if calls else last))
    items += [function_call_item(new_id("fc"), call, last if index == len(calls) - 1 else "completed") for index, call in enumerate(calls)]
    return items


def usage(parsed: openai_api.Parsed, completion: Completion, tokenizer: Any) -> dict[str, Any]:
    thinking = _reasoning_tokens(parsed, completion, tokenizer)
    return {"input_tokens": completion.prompt_tokens, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": completion.completion_tokens, "output_tokens_details": {"reasoning_tokens": thinking},
            "total_tokens": completion.prompt_tokens + completion.completion_tokens}


def _reasoning_tokens(parsed: openai_api.Parsed, completion: Completion, tokenizer: Any) -> int:
    """The answer's tokens up to the end of its thought (where the front splits thinking off and has the token ids)."""
    ids = completion.token_ids
    if not (parsed.reasoning and parsed.thinks) or tokenizer is None or not ids:
        return 0
    end = tokenizer.convert_tokens_to_ids(reasoning.END)
    if isinstance(end, int) and end != tokenizer.unk_token_id and end in ids:
        return ids.index(end) + 1
    thought, content = reasoning.split(completion.text)
    return len(ids) if thought and content is None else 0


def envelope(asked: Asked, parsed: openai_api.Parsed, model: str, status: str, output: list[dict[str, Any]],
             used: dict[str, Any] | None) -> dict[str, Any]:
    """A Response object: its output and status, and the request's parameters as vLLM echoes them."""
    body, request = asked.body, parsed.requests[0]
    return {"id": asked.id, "object": "response", "created_at": asked.created_at, "status": status, "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "instructions": body.get("instructions"), "metadata": body.get("metadata"), "model": model, "output": output,
            "parallel_tool_calls": body.get("parallel_tool_calls") is not False, "temperature": request.temperature,
            "tool_choice": asked.tool_choice, "tools": body.get("tools") or [], "top_p": request.top_p, "background": False,
            "max_output_tokens": request.max_tokens, "max_tool_calls": body.get("max_tool_calls"), "previous_response_id": None,
            "prompt": None, "prompt_cache_key": body.get("prompt_cache_key"), "prompt_cache_retention": body.get("prompt_cache_retention"),
            "reasoning": body.get("reasoning"), "safety_identifier": body.get("safety_identifier"),
            "service_tier": body.get("service_tier") or "auto", "text": body.get("text"), "top_logprobs": None,
            "truncation": body.get("truncation") or "disabled", "usage": used, "user": body.get("user"),
            "presence_penalty": request.presence_penalty, "frequency_penalty": request.frequency_penalty}


def response(asked: Asked, parsed: openai_api.Parsed, completion: Completion, model: str, tokenizer: Any) -> dict[str, Any]:
    """The Response of a finished answer."""
    said, _ = chat_message.message(completion.text, parsed, completion.finish_reason)
    status = "incomplete" if completion.finish_reason == "length" else "completed"
    return envelope(asked, parsed, model, status, output_items(said, completion.finish_reason), usage(parsed, completion, tokenizer))
