"""The Hermes tool-call format of Qwen2.5's and Qwen3's chat templates (vLLM's `hermes` tool parser reads it): a model
calls a tool by writing `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>` after any text of its own. The
front reads calls from an answer in this form (`serve_apps/generate/tool_calls.py`); the openai engine writes an
upstream's structured `tool_calls` back into it, so every engine's answer is read the same way."""

from __future__ import annotations

import json
import re
from typing import Any

START = "<tool_call>"
BLOCK = re.compile(r"<tool_call>(.*?)</tool_call>|<tool_call>(.*)", re.DOTALL)  # an unclosed last block counts


def calls_text(calls: list[dict[str, Any]]) -> str:
    """OpenAI-shaped tool calls (`{"function": {"name", "arguments"}}`, arguments as JSON text) in the Hermes form."""
    blocks = []
    for call in calls:
        function = call.get("function") or {}
        arguments = function.get("arguments")
        try:
            arguments = json.loads(arguments) if isinstance(arguments, str) else arguments
        except ValueError:
            pass  # kept as the text it was
        blocks.append(f'{START}\n{json.dumps({"name": function.get("name"), "arguments": arguments}, ensure_ascii=False)}\n</tool_call>')
    return "\n".join(blocks)
