"""Streamed answers: OpenAI's server-sent events, and how a live chat answer's deltas become a route's events.

Chat and completions send `data:` events, then `[DONE]`; the Responses API (`responses_stream.py`) sends typed events
(`event: <type>`) and no `[DONE]`, as vLLM's server does. The front's live stream (`service.py`) drives either shape
with the same deltas (`chat_message.LiveMessage`): `start()`, `delta(...)` per delta, `end(...)`, each a list of payloads.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from typing import Any

from actors.engines.types import Completion
from serve_apps.generate import openai_api

DONE = b"data: [DONE]\n\n"


def event(payload: dict[str, Any]) -> bytes:
    """One server-sent event in OpenAI's framing."""
    return b"data: " + json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


def typed_event(payload: dict[str, Any]) -> bytes:
    """One server-sent event named by its payload's `type` (the Responses API's framing; an error event is `error`)."""
    return f"event: {payload.get('type', 'error')}\n".encode() + event(payload)


async def server_sent_events(payloads: Iterable[dict[str, Any]]) -> AsyncIterator[bytes]:
    """Events already known (a finished completion), then `[DONE]`."""
    for payload in payloads:
        yield event(payload)
    yield DONE


class ChatEvents:
    """The chat and completions shape of a live answer: OpenAI's chunks of choice 0 (the role first, or completions'
    echoed prompt), its end with finish_reason, the usage when asked for; then `[DONE]`."""

    closing = DONE

    def __init__(self, parsed: openai_api.Parsed, model: str, tokenizer: Any) -> None:
        self.parsed, self.model, self.tokenizer = parsed, model, tokenizer

    frame = staticmethod(event)

    def start(self) -> list[dict[str, Any]]:
        parsed = self.parsed
        if parsed.chat:
            return [openai_api.delta_chunk(parsed, self.model, 0, "", first=True)]
        if parsed.echo:
            return [openai_api.delta_chunk(parsed, self.model, 0, openai_api.echoed(parsed, 0, self.tokenizer))]
        return []

    def delta(self, delta: dict[str, Any]) -> list[dict[str, Any]]:
        """A chat delta, or a completion's text."""
        parsed = self.parsed
        return [openai_api.delta_chunk(parsed, self.model, 0, delta.get("content", ""), delta=delta if parsed.chat else None)]

    def end(self, completion: Completion, finish_reason: str) -> list[dict[str, Any]]:
        chunks = [openai_api.delta_chunk(self.parsed, self.model, 0, "", ended=completion, finish_reason=finish_reason)]
        if self.parsed.include_usage:
            chunks.append(openai_api.usage_chunk(self.parsed, self.model, [completion]))
        return chunks
