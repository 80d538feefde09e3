"""OpenAI's tool calling on chat completions, as vLLM's server answers it with `--enable-auto-tool-choice
--tool-call-parser hermes`: the Hermes format of Qwen2.5's and Qwen3's chat templates, where the model writes each call
as `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` after the tools its template listed.

- `tool_choice` "auto" (the default when `tools` are given): the tools go to the chat template and the answer's
  `<tool_call>` blocks become the message's `tool_calls` (finish_reason "tool_calls"); the text before the first one is
  its `content` (null when empty). A block that is not a JSON call leaves the whole text as content, as vLLM does.
- "required", or a named function (`{"type": "function", "function": {"name": ...}}`): the answer is constrained to JSON
  (a list of `{"name", "parameters"}`, or the named function's arguments), as vLLM constrains it, and read as the calls.
- "none": the tools are left out of the prompt and nothing is parsed (the model cannot call what it was not shown).
Streamed, the content goes out as it is sampled up to where a call begins; the calls follow, one event each.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from actors.engines.hermes import BLOCK, START
from serve_apps.generate.openai_checks import invalid
from serve_apps.generate.reasoning import held_back


@dataclass(frozen=True)
class ToolUse:
    """How a request's answer may call its tools: `choice` is "auto", "required" or "function" (then `name`)."""

    choice: str
    tools: list[dict[str, Any]]
    name: str | None = None
    parallel: bool = True

    def schema(self) -> dict[str, Any] | None:
        """The JSON the answer is held to for "required" and a named function (None for "auto")."""
        parameters = {tool["function"]["name"]: tool["function"].get("parameters") or {"type": "object"} for tool in self.tools}
        if self.choice == "function":
            return parameters[self.name]
        if self.choice == "required":
            calls = [{"type": "object", "properties": {"name": {"type": "string", "enum": [name]}, "parameters": schema},
                      "required": ["name", "parameters"], "additionalProperties": False} for name, schema in parameters.items()]
            return {"type": "array", "minItems": 1, **({} if self.parallel else {"maxItems": 1}), "items": {"anyOf": calls}}
        return None


def tool_use(body: dict[str, Any]) -> ToolUse | None:
    """The request's tool use (its `tools` already checked by openai_checks); None without tools or with "none"."""
    tools, choice = body.get("tools"), body.get("tool_choice")
    if not tools or choice == "none":
        return None
    parallel = body.get("parallel_tool_calls") is not False
    if isinstance(choice, dict):
        return ToolUse("function", tools, name=choice["function"]["name"], parallel=parallel)
    return ToolUse(choice or "auto", tools, parallel=parallel)


def history(message: dict[str, Any], index: int) -> dict[str, Any]:
    """A message's tool fields, for the chat template: an assistant's `tool_calls` (their `arguments` JSON text read
    into an object, as vLLM gives them to templates) and a tool message's `tool_call_id` and `name`."""
    fields: dict[str, Any] = {}
    for name in ("tool_call_id", "name"):
        if message.get(name) is not None:
            if not isinstance(message[name], str):
                raise invalid(f"messages[{index}].{name} must be a string", "messages")
            fields[name] = message[name]
    calls = message.get("tool_calls")
    if calls is None:
        return fields
    if not isinstance(calls, list) or not all(isinstance(call, dict) and isinstance(call.get("function"), dict)
                                              and isinstance(call["function"].get("name"), str) for call in calls):
        raise invalid(f"messages[{index}].tool_calls must be a list of "
                      '{"id", "type": "function", "function": {"name", "arguments"}}', "messages")
    fields["tool_calls"] = [{**call, "function": {**call["function"], "arguments": _arguments_object(call["function"].get("arguments"))}}
                            for call in calls]
    return fields


def _arguments_object(arguments: Any) -> Any:
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except ValueError:
            return arguments
    return arguments if arguments is not None else {}


def _call(name: str, arguments: Any) -> dict[str, Any]:
    text = arguments if isinstance(arguments, str) else json.dumps(arguments if arguments is not None else {}, ensure_ascii=False)
    return {"id": f"chatcmpl-tool-{uuid.uuid4().hex}", "type": "function", "function": {"name": name, "arguments": text}}


def split(text: str, use: ToolUse) -> tuple[str | None, list[dict[str, Any]]]:
    """An answer as (content, tool calls); (text, []) when it holds no call that parses."""
    calls = []
    for match in BLOCK.finditer(text):
        try:
            call = json.loads((match.group(1) if match.group(1) is not None else match.group(2)).strip())
            calls.append(_call(call["name"], call.get("arguments")))
        except (ValueError, TypeError, KeyError):
            return text, []
    if calls:
        return text[: text.find(START)] or None, calls if use.parallel else calls[:1]
    if use.choice == "function":  # the answer is the arguments (cut short by max_tokens, as vLLM gives them too)
        return "", [_call(use.name, text)]
    if use.choice == "required":
        try:
            return "", [_call(call["name"], call["parameters"]) for call in json.loads(text)]
        except (ValueError, TypeError, KeyError):
            pass
    return text, []


def deltas(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The streamed form of the calls: one delta each, with its index."""
    return [{"tool_calls": [{"index": index, **call}]} for index, call in enumerate(calls)]


def streamed_content(content: str, use: ToolUse) -> str:
    """What of a partial answer's content can be sent already: the text up to where a call may begin (the start of
    `<tool_call>` held back until it is clearly not one); nothing for "required" or a named function (JSON calls)."""
    if use.choice != "auto":
        return ""
    end = content.find(START)
    return content[:end] if end >= 0 else content[: len(content) - held_back(content, START)]
