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


def streamed(text: str) -> tuple[str, str]:
    """What of a partial answer can be sent already, as (reasoning, content): prefixes of what `split` gives for any
    answer that goes on from `text`. Nothing while it may still become `<think>`, never part of a tag, and the
    newlines `split` drops held back until more text follows them."""
    body = text.lstrip()
    if len(body) < len(START) and START.startswith(body):
        return "", ""  # may still become <think>
    if not body.startswith(START):
        return "", text
    body = body[len(START):]
    if END in body:
        reasoning, _, rest = body.partition(END)
        return reasoning.strip("\n"), rest.lstrip("\n")
    return body[: len(body) - held_back(body, END)].strip("\n"), ""
