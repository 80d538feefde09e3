"""An sft row's messages -> token ids and next-token targets, with the loss only on the turns marked for it.

The conversation is rendered once with the model's own chat template; each message's content is
then found in the rendered text, in order, and the tokens whose first character falls inside a
loss message (its content and the end-of-turn token right after it, so the model learns to stop: the token
the template closes an assistant turn with, `end_of_turn_token`)
get their targets. Every other target is IGNORE: system, user and tool turns, the template's role
headers, and the first token of the sequence. Targets are already shifted (`targets[t]` is the
token at t+1, or IGNORE), so packing several examples into one row never trains one example's last
token to predict the next example's first.

Templates may reformat what they render. Qwen3's re-wraps an assistant turn's reasoning as
`<think>\nR\n</think>\n\n` + answer, and drops the reasoning (or a reasoning-only turn altogether)
before the last user query. So a message is found piece by piece: its text split at the think tags,
each piece stripped of newlines and searched in order; the span runs from the first piece found
(or the `<think>` tag just before it) through the last one, any `</think>` after it, and the
end-of-turn token. A loss turn of which nothing was rendered adds no span and is counted in
`turns_not_rendered`; an example left with no loss span at all is dropped, and so is one whose loss spans
all lie past `seq_len`, where it is cut (`dropped["loss_after_seq_len"]`).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

IGNORE = -100
# Characters of rendered text kept per token of `seq_len` before tokenizing: a long session is cut
# before the tokenizer sees it (no BPE token of a real vocabulary is near this long on average).
CHARS_PER_TOKEN_CAP = 32


@dataclass(frozen=True)
class Example:
    input_ids: np.ndarray
    """int64 token ids, at most seq_len of them."""
    targets: np.ndarray
    """int64, the same length: the next token where it belongs to a loss turn, else IGNORE."""

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def loss_tokens(self) -> int:
        return int((self.targets != IGNORE).sum())


THINK_TAGS = re.compile(r"</?think>")
OPENING_BEFORE = re.compile(r"<think>\s*$")
CLOSING_AFTER = re.compile(r"\s*</think>")


def _pieces(content: str) -> list[str]:
    return [piece.strip("\n") for piece in THINK_TAGS.split(content) if piece.strip()]


def find_message(text: str, content: str, cursor: int, closing: re.Pattern[str] | None = None) -> tuple[int, int] | None:
    """Where one message's content was rendered at or after `cursor`: (start, end), or None if nowhere.

    With `closing` (whitespace then the end-of-turn token), the content just before the next end of turn is taken
    first: a short content ("a", "hi", "start") also occurs in the template's own text in between (`<|im_start|>assistant`,
    `<think>`), and the first occurrence would put the loss on the role header and none on the answer."""
    if closing is not None:
        ended = closing.match(text, cursor)  # the previous message's own end of turn, when the cursor stops before it
        begin = ended.end() if ended else cursor
        turn_end = closing.search(text, begin)
        if turn_end is not None:
            start = text.rfind(content, begin, turn_end.start())
            if start >= 0 and start + len(content) == turn_end.start():
                return start, turn_end.start()
    start = text.find(content, cursor)
    if start >= 0:
        return start, start + len(content)
    found = []
    for piece in _pieces(content):
        at = text.find(piece, found[-1][1] if found else cursor)
        if at >= 0:
            found.append((at, at + len(piece)))
    if not found:
        return None
    start, end = found[0][0], found[-1][1]
    opening = OPENING_BEFORE.search(text, max(cursor, start - 32), start)
    return (opening.start() if opening else start), end


def loss_spans(text: str, messages: list[dict[str, Any]], end_of_turn: str | None) -> tuple[list[tuple[int, int]], int]:
    """(character spans of the loss messages in the rendered text, loss messages not found in it)."""
    closing = re.compile(r"\s*" + re.escape(end_of_turn)) if end_of_turn else None
    spans: list[tuple[int, int]] = []
    missing, cursor = 0, 0
    for message in messages:
        content = message.get("content") or ""
        if not content.strip():
            continue
        located = find_message(text, content, cursor, closing)
        if located is None:
            missing += bool(message.get("loss"))
            continue
        start, end = located
        if message.get("loss"):
            after_think = CLOSING_AFTER.match(text, end)
            end = after_think.end() if after_think else end
            after_turn = closing.match(text, end) if closing else None
            end = after_turn.end() if after_turn else end
            spans.append((start, end))
        cursor = end
    return spans, missing


def end_of_turn_token(tokenizer) -> str | None:
    """The token the chat template ends an assistant turn with: the longest added or special token that a probe answer's
    render goes on with (Qwen's `<|im_end|>`, also for a base model whose eos token is `<|endoftext|>`); the eos token
    where none follows it or the template cannot render the probe."""
    from jinja2 import TemplateError

    marker = "TRAJFORGE_END_OF_TURN_PROBE"
    try:
        text = tokenizer.apply_chat_template([{"role": "user", "content": "Hello"}, {"role": "assistant", "content": marker}], tokenize=False)
    except (TemplateError, ValueError):  # a template that wants other turns (a system one, say): the eos token, as before
        return tokenizer.eos_token
    if marker not in text:
        return tokenizer.eos_token
    after = text[text.find(marker) + len(marker):].lstrip()
    tokens = set(tokenizer.get_added_vocab()) | set(tokenizer.all_special_tokens)
    following = [token for token in tokens if token.strip() and after.startswith(token)]
    return max(following, key=len) if following else tokenizer.eos_token


class ChatEncoder:
    """Renders, tokenizes and masks rows with one tokenizer; `dropped` counts what it had to leave out and why."""

    def __init__(self, tokenizer, seq_len: int):
        self.tokenizer = tokenizer
        self.seq_len = seq_len
        self.end_of_turn = end_of_turn_token(tokenizer)
        self.dropped: Counter[str] = Counter()
        self.truncated = 0
        self.turns_not_rendered = 0

    def render(self, messages: list[dict[str, Any]]) -> str:
        plain = [{"role": message["role"], "content": message.get("content") or ""} for message in messages]
        return self.tokenizer.apply_chat_template(plain, tokenize=False)

    def encode(self, rows: list[list[dict[str, Any]]]) -> list[Example | None]:
        """One Example per row (None for a row dropped), tokenized in one batch call."""
        texts, spans = [], []
        for messages in rows:
            text = self.render(messages)
            found, missing = loss_spans(text, messages, self.end_of_turn)
            self.turns_not_rendered += missing
            if not found:
                self.dropped["no_loss_turn_rendered"] += 1
            texts.append(text[: self.seq_len * CHARS_PER_TOKEN_CAP] if found else "")
            spans.append(found or None)
        encoded = self.tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
        examples: list[Example | None] = []
        for ids, offsets, found in zip(encoded["input_ids"], encoded["offset_mapping"], spans):
            examples.append(None if found is None else self._example(ids, offsets, found))
        return examples

    def _example(self, ids: list[int], offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> Example | None:
        token_ids = np.asarray(ids, dtype=np.int64)
        starts = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)[:, 0]
        in_loss = np.zeros(len(token_ids), dtype=bool)
        for start, end in spans:
            in_loss |= (starts >= start) & (starts < end)
        had_loss = bool(in_loss[1:].any())
        if len(token_ids) > self.seq_len:
            self.truncated += 1
            token_ids, in_loss = token_ids[: self.seq_len], in_loss[: self.seq_len]
        targets = np.full(len(token_ids), IGNORE, dtype=np.int64)
        targets[:-1] = np.where(in_loss[1:], token_ids[1:], IGNORE)
        if not (targets != IGNORE).any():
            self.dropped["loss_after_seq_len" if had_loss else "no_loss_tokens"] += 1  # the cut left none of the loss turns
            return None
        return Example(token_ids, targets)
