"""Streamed answers: server-sent events, and text released token by token while the model runs.

`LiveText` turns sampled token ids into text as they arrive (incremental detokenization: only the
last few tokens are decoded again) and releases only text that is final: never half a character,
never a stop sequence or what may be its beginning.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from typing import Any

from actors.engines.types import cut_at_stop

DONE = b"data: [DONE]\n\n"


def event(payload: dict[str, Any]) -> bytes:
    """One server-sent event in OpenAI's framing."""
    return b"data: " + json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


async def server_sent_events(payloads: Iterable[dict[str, Any]]) -> AsyncIterator[bytes]:
    """Events already known (a finished completion), then `[DONE]`."""
    for payload in payloads:
        yield event(payload)
    yield DONE


class LiveText:
    """The text of a generation as its tokens arrive, released once it cannot change."""

    def __init__(self, tokenizer: Any, stops: list[str]):
        self.tokenizer = tokenizer
        self.stops = [stop for stop in stops if stop]
        self.hold = max((len(stop) for stop in self.stops), default=1) - 1
        self.ids: list[int] = []
        self.prefix = self.read = 0  # ids[prefix:read] were decoded last time; ids[read:] are new
        self.text = ""
        self.sent = 0
        self.stopped = False

    def _decode(self, start: int, end: int) -> str:
        return self.tokenizer.decode(self.ids[start:end], skip_special_tokens=True)

    def add(self, token: int) -> str:
        """The text that `token` makes final ("" while a character or a possible stop sequence is incomplete)."""
        self.ids.append(token)
        if self.stopped:
            return ""
        # Decoding from a few tokens back keeps the spacing rules of tokenizers that look at the previous token.
        before, after = self._decode(self.prefix, self.read), self._decode(self.prefix, len(self.ids))
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.text += after[len(before):]
            self.prefix, self.read = self.read, len(self.ids)
        cut, self.stopped = cut_at_stop(self.text, self.stops)
        end = len(cut) if self.stopped else len(self.text) - self.hold
        piece = self.text[self.sent:end] if end > self.sent else ""
        self.sent += len(piece)
        return piece

    def finish(self, final_text: str) -> str:
        """What is left to send once the engine's own text (cut at its stop) is known."""
        return final_text[self.sent:]
