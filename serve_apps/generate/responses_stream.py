"""The Responses API's event stream (`stream: true` on `/v1/responses`), as vLLM 0.34's server sends it, from the chat
path's live deltas (`chat_message.LiveMessage`: reasoning, content up to a tool call, then each call whole).

`response.created` and `response.in_progress` (the Response so far: status in_progress, no output); per output item
`response.output_item.added`, its deltas, then its end: a reasoning item's `response.content_part.added`,
`response.reasoning_text.delta`..., `response.reasoning_text.done`, `response.content_part.done`; a message's
`response.content_part.added`, `response.output_text.delta`..., `response.output_text.done`,
`response.content_part.done`; a function call's `response.function_call_arguments.delta` and `.done`; each then
`response.output_item.done`. Last `response.completed`, or `response.incomplete` when the answer was cut by
`max_output_tokens`, with the whole Response (the streamed items, with their ids) and its usage. Every event has its
`sequence_number`, from 0; each is framed as `event: <type>` and `data: <json>`, with no `[DONE]`.
"""

from __future__ import annotations

from typing import Any

from actors.engines.types import Completion
from serve_apps.generate import openai_api, responses_api
from serve_apps.generate.streaming import typed_event


class ResponseEvents:
    """One streamed Response: what `service.GenerateService._live_events` asks of a stream's shape."""

    closing = b""
    frame = staticmethod(typed_event)

    def __init__(self, asked: responses_api.Asked, parsed: openai_api.Parsed, model: str, tokenizer: Any) -> None:
        self.asked, self.parsed, self.model, self.tokenizer = asked, parsed, model, tokenizer
        self.sequence = 0
        self.items: list[dict[str, Any]] = []
        """The output items done so far."""
        self.open: dict[str, Any] | None = None
        """The item being streamed: its kind (reasoning, content, call) and what it holds so far."""

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        payload = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return payload

    def _at(self, opened: dict[str, Any] | None = None) -> dict[str, Any]:
        """Where the open item is: its output index and id (and its one content part, but for calls)."""
        opened = opened or self.open
        where = {"output_index": len(self.items), "item_id": opened["id"]}
        return where if opened["kind"] == "call" else {**where, "content_index": 0}

    def start(self) -> list[dict[str, Any]]:
        response = responses_api.envelope(self.asked, self.parsed, self.model, "in_progress", [], None)
        return [self._event("response.created", response=response), self._event("response.in_progress", response=response)]

    def delta(self, delta: dict[str, Any]) -> list[dict[str, Any]]:
        events = []
        for kind in ("reasoning", "content"):
            if delta.get(kind):
                if self.open is None or self.open["kind"] != kind:
                    events += self._close("completed") + self._open(kind)
                self.open["text"] += delta[kind]
                name = "response.reasoning_text.delta" if kind == "reasoning" else "response.output_text.delta"
                events.append(self._event(name, **self._at(), delta=delta[kind], **({} if kind == "reasoning" else {"logprobs": []})))
        for call in delta.get("tool_calls", []):
            events += self._close("completed") + self._open("call", call)
            events.append(self._event("response.function_call_arguments.delta", **self._at(), delta=call["function"]["arguments"]))
        return events

    def end(self, completion: Completion, finish_reason: str) -> list[dict[str, Any]]:
        """The last item's end, then the whole Response with its usage."""
        events = self._close(responses_api.item_status(completion.finish_reason))
        status = "incomplete" if completion.finish_reason == "length" else "completed"
        response = responses_api.envelope(self.asked, self.parsed, self.model, status, self.items,
                                          responses_api.usage(self.parsed, completion, self.tokenizer))
        return events + [self._event(f"response.{status}", response=response)]

    def _open(self, kind: str, call: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        index = len(self.items)
        if kind == "call":
            self.open = {"kind": kind, "id": responses_api.new_id("fc"), "call": call}
            item = {**responses_api.function_call_item(self.open["id"], call, "in_progress"), "arguments": ""}
            return [self._event("response.output_item.added", output_index=index, item=item)]
        self.open = {"kind": kind, "id": responses_api.new_id("rs" if kind == "reasoning" else "msg"), "text": ""}
        if kind == "reasoning":
            item, part = {**responses_api.reasoning_item(self.open["id"], "", "in_progress"), "content": []}, {"type": "reasoning_text", "text": ""}
        else:
            item, part = responses_api.message_item(self.open["id"], "", "in_progress"), {**responses_api.output_text(""), "logprobs": []}
        return [self._event("response.output_item.added", output_index=index, item=item),
                self._event("response.content_part.added", **self._at(), part=part)]

    def _close(self, status: str) -> list[dict[str, Any]]:
        """The open item's end (`status`: whether the answer's end cut it), if one is open."""
        opened, self.open = self.open, None
        if opened is None:
            return []
        where = self._at(opened)
        if opened["kind"] == "call":
            item = responses_api.function_call_item(opened["id"], opened["call"], status)
            events = [self._event("response.function_call_arguments.done", **where, arguments=item["arguments"], name=item["name"])]
        elif opened["kind"] == "reasoning":
            item = responses_api.reasoning_item(opened["id"], opened["text"], status)
            events = [self._event("response.reasoning_text.done", **where, text=opened["text"]),
                      self._event("response.content_part.done", **where, part=item["content"][0])]
        else:
            item = responses_api.message_item(opened["id"], opened["text"], status)
            events = [self._event("response.output_text.done", **where, text=opened["text"], logprobs=[]),
                      self._event("response.content_part.done", **where, part=responses_api.output_text(opened["text"]))]
        self.items.append(item)
        return events + [self._event("response.output_item.done", output_index=len(self.items) - 1, item=item)]
