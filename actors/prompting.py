"""Prompts of the actor loop and the parsing of what the model answers.

The answer is `<think>...</think><action>{JSON}</action>` (first generation, stopped at `</action>`)
and `<state_update>{JSON}</state_update>` (a second generation that continues the same text, stopped at
`</state_update>`; same actor, so the prefix cache serves it). Malformed output is never dropped:
`ParsedOutput.errors` says what was wrong and the record keeps the raw text.
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from actors.state import State, StateUpdate, parse_update, render
from actors.state.model import InvalidStateUpdate
from sandbox.models import Action, InvalidAction, parse_action
from trajforge.errors import ConfigError

DEFAULT_PROMPTS = Path(__file__).resolve().parents[1] / "configs" / "prompts.yaml"
ACTION_STOP = "</action>"
STATE_STOP = "</state_update>"
STATE_OPEN = "\n<state_update>"
FEEDBACK_CHARS = 2000
"""Most characters of a diff or an error the next step's prompt shows (a longer diff ends with a note that it was cut)."""
# Tags as models write them: any case, attributes allowed (`<action type="rewrite">`); an unclosed <think> ends
# where the action starts, or where the first generation stopped (the `</action>` the parser adds there, which the
# model did not write) or the state update starts. A closed <think> may mention the other tags ("then I write the
# <action>"): the action and the state update are looked for after it first. A `</think>` with no <think> before it
# closes reasoning that the chat template opened in the prompt (Qwen3's thinking models): the text before it.
TAG = {name: re.compile(rf"<{name}(?:\s[^>]*)?>(.*?)(?:</{name}\s*>|{until}$)", re.DOTALL | re.IGNORECASE)
       for name, until in (("think", "(?=<action[\\s>]|</action\\s*>|<state_update[\\s>])|"), ("action", ""), ("state_update", ""))}
CLOSED_THINK = re.compile(r"<think(?:\s[^>]*)?>(.*?)</think\s*>", re.DOTALL | re.IGNORECASE)
OPENED_IN_PROMPT_THINK = re.compile(r"\A((?:(?!<think[\s>]|<action[\s>]|<state_update[\s>]).)*?)</think\s*>", re.DOTALL | re.IGNORECASE)
FENCE = re.compile(r"^```[\w-]*\s*\n?(.*?)\n?```$", re.DOTALL)


def unfenced(text: str) -> str:
    """The inside of a Markdown code fence (```json ... ```), which models often put their JSON in; else the text."""
    match = FENCE.match(text.strip())
    return match.group(1).strip() if match else text.strip()


PLACEHOLDERS = {"system": set(), "user": {"state", "instruction", "language", "code", "feedback"}, "feedback": {"verdict", "details"}}
"""The templates a prompts file must have and the placeholders each may use (`system` is shown as written)."""


def load_prompts(path: str | Path | None = None) -> dict[str, str]:
    """The templates of a prompts file, checked before any task uses them: a ConfigError names the file and what is wrong
    (unreadable, not YAML, a template missing or not text, a placeholder the loop does not fill)."""
    source = Path(path or DEFAULT_PROMPTS)
    try:
        templates = yaml.safe_load(source.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"prompt file {source} cannot be read: {' '.join(str(exc).split())}") from None
    if not isinstance(templates, dict):
        raise ConfigError(f"prompt file {source} is not a mapping of templates ({', '.join(PLACEHOLDERS)})")
    missing = set(PLACEHOLDERS) - set(templates)
    if missing:
        raise ConfigError(f"prompt file {source} lacks {sorted(missing)}")
    for name, allowed in PLACEHOLDERS.items():
        if not isinstance(templates[name], str):
            raise ConfigError(f"prompt file {source}: {name} is not text")
        if name == "system":
            continue
        try:
            used = {field for _, field, _, _ in string.Formatter().parse(templates[name]) if field is not None}
        except ValueError as exc:
            raise ConfigError(f"prompt file {source}: {name} is not a template ({exc}; write a literal brace as {{{{ or }}}})") from None
        if unknown := sorted(field for field in used if field not in allowed):
            raise ConfigError(f"prompt file {source}: {name} uses {', '.join('{' + f + '}' for f in unknown)}; it may use "
                              f"{', '.join('{' + f + '}' for f in sorted(allowed))} (a literal brace is {{{{ or }}}})")
    return templates


def render_messages(templates: dict[str, str], task: dict[str, Any], state: State, feedback: str = "") -> list[dict[str, str]]:
    code = "\n\n".join(f"# {name}\n{content}" for name, content in sorted(task["files"].items())) if len(task["files"]) > 1 \
        else next(iter(task["files"].values()), "")
    user = templates["user"].format(state=render(state), instruction=task["instruction"], language=task.get("language", ""),
                                     code=code, feedback=feedback)
    return [{"role": "system", "content": templates["system"].strip()}, {"role": "user", "content": user.strip()}]


def render_feedback(templates: dict[str, str], result: dict[str, Any] | None, error: str | None) -> str:
    if error:
        return templates["feedback"].format(verdict="not applied", details=error[:FEEDBACK_CHARS // 2])
    verdict = f"{'applied' if result.get('valid') else 'invalid'}, {result.get('matches', 0)} match(es)"
    diff = result.get("diff")
    if not diff:
        details = (result.get("error") or "no change: the pattern matched nothing")[:FEEDBACK_CHARS]
    elif len(diff) > FEEDBACK_CHARS or result.get("diff_truncated"):  # the sandbox's cap, or the prompt's
        details = f"{diff[:FEEDBACK_CHARS]}\n[the diff is cut here; it has {result.get('diff_bytes') or len(diff.encode())} bytes in all]"
    else:
        details = diff
    return templates["feedback"].format(verdict=verdict, details=details)


@dataclass
class ParsedOutput:
    think: str | None = None
    action: Action | None = None
    action_text: str | None = None
    state_update: StateUpdate | None = None
    errors: list[str] = field(default_factory=list)

    def to_record(self) -> dict[str, Any]:
        return {"think": self.think, "action": self.action.model_dump(exclude_none=True) if self.action else None,
                "action_text": self.action_text, "state_update": self.state_update.model_dump(exclude_defaults=True) if self.state_update else None,
                "errors": self.errors}


def parse_output(action_part: str, state_part: str = "") -> ParsedOutput:
    """Read the tags; every problem becomes an entry in `errors`, never an exception."""
    text = action_part + (ACTION_STOP if ACTION_STOP not in action_part else "") + state_part
    parsed = ParsedOutput()
    after_think = 0
    if match := CLOSED_THINK.search(text) or TAG["think"].search(text) or OPENED_IN_PROMPT_THINK.search(text):
        parsed.think, after_think = match.group(1).strip(), match.end()
    match = TAG["action"].search(text, after_think) or TAG["action"].search(text)
    if not match:
        parsed.errors.append("no <action> tag")
    else:
        parsed.action_text = match.group(1).strip()
        try:
            parsed.action = parse_action(json.loads(unfenced(parsed.action_text)))
        except json.JSONDecodeError as exc:
            parsed.errors.append(f"action is not JSON: {exc}")
        except RecursionError:  # a model's runaway output: `[[[[...` thousands deep
            parsed.errors.append("action is nested too deeply to read (an action is an object of a few levels)")
        except InvalidAction as exc:
            parsed.errors.append(str(exc))
    if match := TAG["state_update"].search(text, after_think) or TAG["state_update"].search(text):
        try:
            parsed.state_update = parse_update(unfenced(match.group(1)) or "{}")
        except InvalidStateUpdate as exc:
            parsed.errors.append(str(exc))
    return parsed
