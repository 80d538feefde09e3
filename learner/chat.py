"""An sft row's messages -> token ids and next-token targets, with the loss only on the turns marked for it.

The conversation is rendered once with the model's own chat template; each message's content is
then found in the rendered text, in order, and the tokens whose first character falls inside a
loss message (its content and the end-of-turn token right after it, so the model learns to stop)
get their targets. Every other target is IGNORE: system, user and tool turns, the template's role
headers, and the first token of the sequence. Targets are already shifted (`targets[t]` is the
token at t+1, or IGNORE), so packing several examples into one row never trains one example's last
token to predict the next example's first.

Templates that rewrite content (Qwen3's drops the `<think>` part of assistant turns before the last
user turn) are handled by looking for the text after `</think>`; a loss turn found neither way
drops the example, counted as `template_mismatch`.
"""

from __future__ import annotations

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


def loss_spans(text: str, messages: list[dict[str, Any]], end_of_turn: str | None) -> list[tuple[int, int]] | None:
    """Character spans of the loss messages in the rendered text; None when one cannot be found."""
    spans: list[tuple[int, int]] = []
    cursor = 0
    for message in messages:
        content = message.get("content") or ""
        if not content:
            continue
        start = text.find(content, cursor)
        if start < 0 and "</think>" in content:
            content = content.rsplit("</think>", 1)[1].lstrip("\n")
            start = text.find(content, cursor) if content else -1
        if start < 0:
            if message.get("loss"):
                return None
            continue
        end = start + len(content)
        if message.get("loss"):
            if end_of_turn:
                closing = text.find(end_of_turn, end)
                if closing >= 0 and not text[end:closing].strip():
                    end = closing + len(end_of_turn)
            spans.append((start, end))
        cursor = end
    return spans


class ChatEncoder:
    """Renders, tokenizes and masks rows with one tokenizer; `dropped` counts what it had to leave out and why."""

    def __init__(self, tokenizer, seq_len: int):
        self.tokenizer = tokenizer
        self.seq_len = seq_len
        self.end_of_turn = tokenizer.eos_token
        self.dropped: Counter[str] = Counter()
        self.truncated = 0

    def render(self, messages: list[dict[str, Any]]) -> str:
        plain = [{"role": message["role"], "content": message.get("content") or ""} for message in messages]
        return self.tokenizer.apply_chat_template(plain, tokenize=False)

    def encode(self, rows: list[list[dict[str, Any]]]) -> list[Example | None]:
        """One Example per row (None for a row dropped), tokenized in one batch call."""
        texts, spans = [], []
        for messages in rows:
            text = self.render(messages)
            found = loss_spans(text, messages, self.end_of_turn)
            if found is None:
                self.dropped["template_mismatch"] += 1
            texts.append(text[: self.seq_len * CHARS_PER_TOKEN_CAP] if found is not None else "")
            spans.append(found)
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
        if len(token_ids) > self.seq_len:
            self.truncated += 1
            token_ids, in_loss = token_ids[: self.seq_len], in_loss[: self.seq_len]
        targets = np.full(len(token_ids), IGNORE, dtype=np.int64)
        targets[:-1] = np.where(in_loss[1:], token_ids[1:], IGNORE)
        if not (targets != IGNORE).any():
            self.dropped["no_loss_tokens"] += 1
            return None
        return Example(token_ids, targets)
