"""Text released token by token while a model samples: `LiveText`, and `text_stream` for a thread that waits on an engine.

`LiveText` turns sampled token ids into text as they arrive (incremental detokenization: only the
last few tokens are decoded again) and releases only text that is final: never half a character,
never a stop sequence (unless asked to keep it) or what may be its beginning, and a `stop_token_ids` token (or, with
`skip_special_tokens` off, a special token) only once another follows: the token that ends an answer is not in its text.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

from actors.engines.types import Completion, GenerationRequest, cut_at_stop


class LiveText:
    """The text of a generation as its tokens arrive, released once it cannot change."""

    def __init__(self, tokenizer: Any, stops: list[str], keep_stop: bool = False, skip_special_tokens: bool = True,
                 stop_token_ids: list[int] | None = None):
        self.tokenizer = tokenizer
        self.stops = [stop for stop in stops if stop]
        self.keep_stop = keep_stop  # release the stop sequence that ended the text too
        self.skip_special_tokens = skip_special_tokens
        # tokens that may end the answer, whose text it then leaves out: released only once another token follows
        self.held_ids = set(stop_token_ids or ()) | (set() if skip_special_tokens else set(tokenizer.all_special_ids))
        self.hold = max((len(stop) for stop in self.stops), default=1) - 1
        self.ids: list[int] = []
        self.prefix = self.read = 0  # ids[prefix:read] were decoded last time; ids[read:] are new
        self.text = ""
        self.sent = 0
        self.stopped = False

    def _decode(self, start: int, end: int) -> str:
        return self.tokenizer.decode(self.ids[start:end], skip_special_tokens=self.skip_special_tokens)

    def add(self, token: int) -> str:
        """The text that `token` makes final ("" while a character or a possible stop sequence is incomplete)."""
        self.ids.append(token)
        if self.stopped or token in self.held_ids:
            return ""
        # Decoding from a few tokens back keeps the spacing rules of tokenizers that look at the previous token.
        before, after = self._decode(self.prefix, self.read), self._decode(self.prefix, len(self.ids))
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.text += after[len(before):]
            self.prefix, self.read = self.read, len(self.ids)
        cut, stop = cut_at_stop(self.text, self.stops, keep=self.keep_stop)
        self.stopped = stop is not None
        end = len(cut) if self.stopped else len(self.text) - self.hold
        piece = self.text[self.sent:end] if end > self.sent else ""
        self.sent += len(piece)
        return piece

    def finish(self, final_text: str) -> str:
        """What is left to send once the engine's own text (cut at its stop) is known."""
        return final_text[self.sent:]


def text_stream(engine: Any, request: GenerationRequest, submit: Callable[..., Future], timeout_s: float,
                cancelled: threading.Event) -> Iterator[str | Completion]:
    """Final text pieces while `engine.generate_streaming` runs (started with `submit`), then its Completion.

    Past `timeout_s` the generation is cancelled and an error Completion ends the stream; closing the
    iterator early (the reader went away) cancels it too.
    """
    tokens: queue.SimpleQueue[int | None] = queue.SimpleQueue()
    running = submit(engine.generate_streaming, request, tokens.put, cancelled)
    running.add_done_callback(lambda _: tokens.put(None))  # after the last token: the end, seen at once
    text = LiveText(engine.tokenizer, request.stop, request.include_stop_str_in_output, request.skip_special_tokens, request.stop_token_ids)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                token = tokens.get(timeout=max(deadline - time.monotonic(), 0.0))
            except queue.Empty:
                cancelled.set()
                yield Completion(text="", finish_reason="error", engine=engine.name, request_id=request.request_id,
                                 error=f"generation timed out after {timeout_s} s", timed_out=True)
                return
            if token is None:
                break
            piece = text.add(token)
            if piece:
                yield piece
        completion = running.result()
        rest = text.finish(completion.text) if completion.finish_reason != "error" else ""
        if rest:
            yield rest
        yield completion
    finally:
        cancelled.set()
