"""vLLM's `--reasoning-parser qwen3` (`generate.reasoning_parser: qwen3`), as vLLM 0.34 reads Qwen3's answers: a chat
answer thinks first, so its text up to `</think>` is the message's `reasoning` (vLLM's field since 0.11;
`reasoning_content` before) and the rest its content. A leading `<think>` is dropped (hybrid Qwen3 writes it; the
thinking-only Qwen3-2507 templates put it in the prompt, so their answers start inside the thought); a `<tool_call>`
ends the thinking too (it stays in the content, where tool calls are read); an answer with no `</think>` (cut by
max_tokens) is all reasoning, its content null. The newlines the template puts around each part are dropped, and an
empty thought is null. A request whose `chat_template_kwargs` say `enable_thinking: false` (the template closes an
empty thought in the prompt) is not split: all content, as vLLM does.

The tags must be in the answer's text: Qwen3's tokenizer keeps them (they are not special tokens there); a tokenizer
that marks them special drops them unless the request says `skip_special_tokens: false`.
"""

from __future__ import annotations

from actors.engines.hermes import START as TOOL_START

START, END = "<think>", "</think>"


def thinks(chat_template_kwargs: object) -> bool:
    """Whether a request's answer is read as thinking first: unless its template was told `enable_thinking: false`."""
    return not (isinstance(chat_template_kwargs, dict) and chat_template_kwargs.get("enable_thinking") is False)


def split(text: str) -> tuple[str | None, str | None]:
    """(reasoning, content) of a whole answer; each null when empty."""
    thought, content = _parts(text)
    if content is None:
        return thought.strip("\n") or None, None
    return thought.strip("\n") or None, content or None


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
    head = text.lstrip()
    if len(head) < len(START) and START.startswith(head):
        return "", ""  # may still become <think>
    thought, content = _parts(text)
    if content is None:
        thought = thought[: len(thought) - max(held_back(thought, END), held_back(thought, TOOL_START))]
    return thought.strip("\n"), content or ""


def _parts(text: str) -> tuple[str, str | None]:
    """The thought (its leading `<think>` dropped) and what follows its end (None while it has not ended)."""
    head = text.lstrip()
    if head.startswith(START):
        text = head[len(START):]
    ends = [(text.find(tag), tag) for tag in (END, TOOL_START) if tag in text]
    if not ends:
        return text, None
    at, tag = min(ends)
    rest = text[at + len(END):].lstrip("\n") if tag == END else text[at:]
    return text[:at], rest
