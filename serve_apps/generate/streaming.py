"""Streamed answers in OpenAI's framing: server-sent events, then `[DONE]`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from typing import Any

DONE = b"data: [DONE]\n\n"


def event(payload: dict[str, Any]) -> bytes:
    """One server-sent event in OpenAI's framing."""
    return b"data: " + json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


async def server_sent_events(payloads: Iterable[dict[str, Any]]) -> AsyncIterator[bytes]:
    """Events already known (a finished completion), then `[DONE]`."""
    for payload in payloads:
        yield event(payload)
    yield DONE
