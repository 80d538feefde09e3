"""vLLM's `--reasoning-parser qwen3` (`generate.reasoning_parser: qwen3`): a Qwen3 answer that starts by thinking,
`<think>R</think>A`, is given as the message's `reasoning` R (vLLM's field since 0.11; `reasoning_content` before) and
its content A, each without the newlines the template puts around them. An answer that does not start with `<think>`
(Qwen3 with `enable_thinking: false`, whose template closes an empty thought in the prompt) is all content; one cut
before `</think>` (max_tokens) is all reasoning, its content null. Tool calls are read from the content alone.

The tags must be in the answer's text: Qwen3's tokenizer keeps them (they are not special tokens there); a tokenizer
that marks them special drops them unless the request says `skip_special_tokens: false`.
"""

from __future__ import annotations

START, END = "<think>", "</think>"


def split(text: str) -> tuple[str | None, str | None]:
    """(reasoning, content) of an answer; (None, text) when it does not start with `<think>`."""
    body = text.lstrip()
    if not body.startswith(START):
        return None, text
    body = body[len(START):]
    if END not in body:
        return body.strip("\n"), None
    reasoning, _, content = body.partition(END)
    return reasoning.strip("\n"), content.lstrip("\n") or None


def held_back(text: str, tag: str) -> int:
    """How many characters at the end of `text` could be the start of `tag` (held back until they are clearly not)."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0


class ReasoningGate:
    """A streamed answer's pieces as (reasoning, content) pieces, each a prefix-extension of what `split` gives for
    the whole answer: nothing until it is clear whether the answer starts with `<think>`, and never part of a tag."""

    def __init__(self) -> None:
        self.text, self.reasoning_sent, self.content_sent = "", 0, 0

    def add(self, piece: str) -> tuple[str, str]:
        self.text += piece
        body = self.text.lstrip()
        if len(body) < len(START) and START.startswith(body):
            return "", ""  # may still become <think>
        if not body.startswith(START):
            return "", self._content(self.text)
        body = body[len(START):]
        if END in body:
            reasoning, _, rest = body.partition(END)
            return self._reasoning(reasoning.strip("\n")), self._content(rest.lstrip("\n"))
        reasoning = body[: len(body) - held_back(body, END)].lstrip("\n").rstrip("\n")
        return self._reasoning(reasoning), ""

    def _reasoning(self, reasoning: str) -> str:
        out = reasoning[self.reasoning_sent:]
        self.reasoning_sent = max(self.reasoning_sent, len(reasoning))
        return out

    def _content(self, content: str) -> str:
        out = content[self.content_sent:]
        self.content_sent = max(self.content_sent, len(content))
        return out
