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
    thought, content = reasoning.split(text) if parsed.reasoning else (None, text)
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
    """A streamed answer's pieces as OpenAI deltas (`{"reasoning": ...}`, `{"content": ...}`) while it is sampled, and
    at its end what is left of the whole message: the rest of its reasoning and content, then its tool calls."""

    def __init__(self, parsed: Parsed) -> None:
        self.parsed = parsed
        self.thinking = reasoning.ReasoningGate() if parsed.chat and parsed.reasoning else None
        self.tools = tool_calls.ContentGate(parsed.tool_use) if parsed.chat and parsed.tool_use is not None else None
        self.sent = {"reasoning": "", "content": ""}

    def add(self, piece: str) -> list[dict[str, Any]]:
        thought, said = self.thinking.add(piece) if self.thinking is not None else ("", piece)
        if self.tools is not None:
            said = self.tools.add(said)
        return self._deltas(thought if self.parsed.include_reasoning else "", said)

    def finish(self, text: str, finish_reason: str) -> tuple[list[dict[str, Any]], str]:
        if not self.parsed.chat:
            return self._deltas("", _rest(text, self.sent["content"])), finish_reason
        said, finish_reason = message(text, self.parsed, finish_reason)
        deltas = self._deltas(_rest(said.get("reasoning") or "", self.sent["reasoning"]), _rest(said["content"] or "", self.sent["content"]))
        return deltas + tool_calls.deltas(said.get("tool_calls", [])), finish_reason

    def _deltas(self, thought: str, said: str) -> list[dict[str, Any]]:
        self.sent["reasoning"] += thought
        self.sent["content"] += said
        return [delta for delta in ({"reasoning": thought}, {"content": said}) if next(iter(delta.values()))]


def _rest(whole: str, sent: str) -> str:
    """What of `whole` is still to send after `sent` (nothing when what was sent is not its start)."""
    return whole[len(sent):] if whole.startswith(sent) else ""
