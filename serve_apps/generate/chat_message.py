"""An answer's text as OpenAI's assistant message: its reasoning (with `generate.reasoning_parser`: `reasoning.py`),
its content, and its tool calls (with `tools`: `tool_calls.py`), whole (`message`) or as stream deltas while it is
sampled (`LiveMessage`), the deltas always prefixes of the whole message's parts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from serve_apps.generate import reasoning, tool_calls

if TYPE_CHECKING:
    from serve_apps.generate.openai_api import Parsed


def message(text: str, parsed: Parsed, finish_reason: str) -> tuple[dict[str, Any], str]:
    """The assistant message of a chat answer and its finish_reason ("tool_calls" when it called tools, but for a
    named function, which OpenAI ends with "stop")."""
    thought, content = reasoning.split(text) if parsed.reasoning and parsed.thinks else (None, text)
    said: dict[str, Any] = {"role": "assistant", "content": content}
    if parsed.reasoning:
        said["reasoning"] = thought if parsed.include_reasoning else None
    use = parsed.tool_use
    if use is None or (content is None and use.choice == "auto"):
        return said, finish_reason
    said["content"], calls = tool_calls.split(content or "", use)
    if not calls:
        return said, finish_reason
    return {**said, "tool_calls": calls}, finish_reason if use.choice == "function" else "tool_calls"


def has_parts(said: dict[str, Any]) -> bool:
    """Whether a message holds more than content (reasoning or tool calls): streamed as parts, not token by token."""
    return bool(said.get("reasoning") or said.get("tool_calls"))


class LiveMessage:
    """A streamed answer's pieces as OpenAI deltas (`{"reasoning": ...}`, `{"content": ...}`) while it is sampled: each
    time, what of the text so far can be sent (`reasoning.streamed`, `tool_calls.streamed_content`) past what was; at
    its end what is left of the whole message: the rest of its reasoning and content, then its tool calls."""

    def __init__(self, parsed: Parsed) -> None:
        self.parsed, self.text = parsed, ""
        self.sent = {"reasoning": "", "content": ""}

    def add(self, piece: str) -> list[dict[str, Any]]:
        self.text += piece
        parsed = self.parsed
        thought, said = reasoning.streamed(self.text) if parsed.chat and parsed.reasoning and parsed.thinks else ("", self.text)
        if parsed.chat and parsed.tool_use is not None:
            said = tool_calls.streamed_content(said, parsed.tool_use)
        return self._deltas(thought if parsed.include_reasoning else "", said)

    def finish(self, text: str, finish_reason: str) -> tuple[list[dict[str, Any]], str]:
        if not self.parsed.chat:
            return self._deltas("", text), finish_reason
        said, finish_reason = message(text, self.parsed, finish_reason)
        return self._deltas(said.get("reasoning") or "", said["content"] or "") + tool_calls.deltas(said.get("tool_calls", [])), finish_reason

    def _deltas(self, thought: str, said: str) -> list[dict[str, Any]]:
        """Deltas of what of `thought` and `said` (each the whole part so far) was not sent yet (nothing of a part whose
        start is not what was sent)."""
        deltas = []
        for key, whole in (("reasoning", thought), ("content", said)):
            more = whole[len(self.sent[key]):] if whole.startswith(self.sent[key]) else ""
            if more:
                self.sent[key] += more
                deltas.append({key: more})
        return deltas
