"""The structured state an agent carries between steps (specification section 5), its merge rules and rendering.

Caps: `history` keeps the last 3 entries, every text is at most 256 characters, every other list at
most 16 items. `State` itself rejects values over the caps, when built and when a field is assigned (a
malformed update is an error, never silently accepted); `merge` is where new items are deduplicated and
trimmed to fit.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from trajforge.errors import TrajforgeError

log = logging.getLogger(__name__)

MAX_TEXT = 256
MAX_HISTORY = 3
MAX_ITEMS = 16
DEFAULT_TOKEN_BUDGET = 1024
"""`summarize_history`'s budget when none is given: the default of `actors.loop.state_token_budget`."""
LIST_FIELDS = ("goals", "constraints", "decisions", "hypotheses", "history", "open_issues")
ELLIPSIS = "…"


class InvalidStateUpdate(TrajforgeError, ValueError):
    """A state update that does not match the schema; the message names the field."""


def _check_text(value: str) -> str:
    if len(value) > MAX_TEXT:
        raise ValueError(f"text of {len(value)} characters; at most {MAX_TEXT}")
    return value


class State(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    goals: list[str] = Field(default_factory=list, max_length=MAX_ITEMS)
    """What the task must achieve; an update adds to them."""
    constraints: list[str] = Field(default_factory=list, max_length=MAX_ITEMS)
    """What must not change (the public API, the tests); an update adds to them."""
    decisions: list[str] = Field(default_factory=list, max_length=MAX_ITEMS)
    """Choices made so far; an update adds to them."""
    hypotheses: list[str] = Field(default_factory=list, max_length=MAX_ITEMS)
    """What the agent believes but has not checked; an update adds to them, its `resolved` removes them."""
    history: list[str] = Field(default_factory=list, max_length=MAX_HISTORY)
    """The last steps, oldest first: an update appends, the 3 newest stay."""
    open_issues: list[str] = Field(default_factory=list, max_length=MAX_ITEMS)
    """Problems still to solve; an update adds to them, its `resolved` removes them."""
    next_focus: str = ""
    """What the next step should look at; an update replaces it."""

    @field_validator(*LIST_FIELDS)
    @classmethod
    def _texts(cls, values: list[str]) -> list[str]:
        return [_check_text(value) for value in values]

    @field_validator("next_focus")
    @classmethod
    def _focus(cls, value: str) -> str:
        return _check_text(value)

    def token_budget(self, count_tokens: Callable[[str], int] | Any = None) -> int:
        """The specification's `token_budget` method: `token_budget(self, count_tokens)`."""
        return token_budget(self, count_tokens)


class StateUpdate(BaseModel):
    """What a model's `<state_update>` may say: items to add per list, items resolved, a new focus."""

    model_config = ConfigDict(extra="forbid")

    goals: list[str] = Field(default_factory=list)
    constraints: list[str] = Field(default_factory=list)
    decisions: list[str] = Field(default_factory=list)
    hypotheses: list[str] = Field(default_factory=list)
    history: list[str] = Field(default_factory=list)
    open_issues: list[str] = Field(default_factory=list)
    resolved: list[str] = Field(default_factory=list)
    """Open issues (or hypotheses) that no longer hold: removed on merge."""
    next_focus: str | None = None

    @field_validator(*LIST_FIELDS, "resolved", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


def parse_update(data: Mapping[str, Any] | str) -> StateUpdate:
    """A StateUpdate from a dict or JSON text; InvalidStateUpdate naming the field otherwise."""
    try:
        if isinstance(data, str):
            data = json.loads(data)
        return StateUpdate.model_validate(data)
    except RecursionError:  # a model's runaway output: `[[[[...` thousands deep
        raise InvalidStateUpdate("invalid state update: nested too deeply to read (a state update is an object of lists of texts)") from None
    except (ValueError, ValidationError) as exc:
        if isinstance(exc, ValidationError):
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'update'}: {e['msg']}" for e in exc.errors(include_url=False))
        else:
            problems = str(exc)
        raise InvalidStateUpdate(f"invalid state update: {problems}") from None


def _key(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().casefold()


def _trim(text: str) -> str:
    text = re.sub(r"\s+", " ", str(text)).strip()
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + ELLIPSIS


def _merge_list(existing: list[str], new: list[str], cap: int, removed: set[str], newest_wins: bool = False) -> list[str]:
    """Existing then new items, deduplicated (whitespace and case insensitive), the newest `cap` kept.

    A repeated item keeps its first place, or with `newest_wins` (history, an event log) moves to the
    end in its newest wording, so a repeated latest event is not the one the cap trims away."""
    merged: dict[str, str] = {}
    for item in [*existing, *new]:
        text = _trim(item)
        key = _key(text)
        if not text or key in removed:
            continue
        if newest_wins:
            merged.pop(key, None)
        merged.setdefault(key, text)
    return list(merged.values())[-cap:]


def _as_update(update: State | StateUpdate | Mapping[str, Any] | str) -> StateUpdate:
    if isinstance(update, StateUpdate):
        return update
    if isinstance(update, State):  # a whole state as the update: its items are added, an empty focus changes nothing
        return StateUpdate.model_validate({**update.model_dump(), "next_focus": update.next_focus or None})
    return parse_update(update)


def as_state(state: State | Mapping[str, Any] | str) -> State:
    """A State as it is; a dict or JSON text (a dump's `state`, a step record's `state_before`) checked against it."""
    if isinstance(state, State):
        return state
    return State.model_validate_json(state) if isinstance(state, str) else State.model_validate(state)


def merge(existing_state: State | Mapping[str, Any] | str, state_update: State | StateUpdate | Mapping[str, Any] | str) -> State:
    """The specification's `merge(existing_state, state_update) -> State`: apply an update (a StateUpdate, a State, a
    dict or JSON text) to a state (a State, or a dict or JSON text checked against it): append + dedupe + trim per list,
    drop `resolved` items, replace the focus if given."""
    existing, update = as_state(existing_state), _as_update(state_update)
    removed = {_key(_trim(item)) for item in update.resolved}
    fields: dict[str, Any] = {}
    for name in LIST_FIELDS:
        cap = MAX_HISTORY if name == "history" else MAX_ITEMS
        fields[name] = _merge_list(getattr(existing, name), getattr(update, name), cap,
                                   removed if name in ("open_issues", "hypotheses") else set(), newest_wins=name == "history")
    fields["next_focus"] = _trim(update.next_focus) if update.next_focus is not None else existing.next_focus
    return State(**fields)


def render(state: State | Mapping[str, Any] | str) -> str:
    """The `<state>` block of a prompt: the non-empty fields as JSON, in a fixed order. A closing tag inside a text (a
    model's state update saying `</state>` or `</action>`) is written `<\\/...` (the same JSON), so no text ends the
    block or opens another early."""
    body = {name: value for name, value in as_state(state).model_dump().items() if value}
    return "<state>\n" + json.dumps(body, ensure_ascii=False, indent=1).replace("</", "<\\/") + "\n</state>"


def heuristic_tokens(text: str) -> int:
    """About 4 characters a token: the fallback when no tokenizer is given."""
    return max(1, (len(text) + 3) // 4)


def token_budget(state: State | Mapping[str, Any] | str, count_tokens: Callable[[str], int] | Any = None) -> int:
    """Tokens the rendered state takes in a prompt, counted with the model's tokenizer when given (the tokenizer
    itself, Hugging Face's or a `tokenizers.Tokenizer`, or a function of the text); else about 4 characters a token."""
    return _counter(count_tokens)(render(state))


def _counter(count_tokens: Callable[[str], int] | Any) -> Callable[[str], int]:
    """A token counter from a tokenizer (anything with `encode`: a Hugging Face tokenizer is callable too, but its call
    answers a BatchEncoding, not a count), a counter as it is, or the heuristic for None."""
    if count_tokens is None:
        return heuristic_tokens
    return tokenizer_counter(count_tokens) if callable(getattr(count_tokens, "encode", None)) else count_tokens


def tokenizer_counter(tokenizer: Any) -> Callable[[str], int]:
    """A token counter from a Hugging Face tokenizer or a `tokenizers.Tokenizer` (special tokens not counted). A
    `tokenizers.Tokenizer` whose file pads or truncates (an embedding model's, to 128) would count every text as that
    length: it counts with a copy that does neither."""
    if callable(getattr(tokenizer, "no_truncation", None)) and (tokenizer.padding or tokenizer.truncation):
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_str(tokenizer.to_str())
        tokenizer.no_padding()
        tokenizer.no_truncation()

    def count(text: str) -> int:
        encoded = tokenizer.encode(text, add_special_tokens=False)
        return len(getattr(encoded, "ids", encoded))

    return count


def summarize_history(state: State | Mapping[str, Any] | str, budget: int = DEFAULT_TOKEN_BUDGET, count_tokens: Callable[[str], int] | Any = None) -> State:
    """Shrink a state over `budget` tokens (counted as `token_budget` does; 1024 unless given): fold history into one summary entry,
    then drop the oldest hypotheses, decisions, open issues, constraints and history entries, then shorten the goals
    and the focus, then drop all goals but the first, until it fits. A budget even that state exceeds is warned about,
    and that state returned."""
    count, state = _counter(count_tokens), as_state(state)
    if token_budget(state, count) <= budget:
        return state
    current = state.model_copy(deep=True)
    if len(current.history) > 1:
        summary = "earlier: " + "; ".join(entry.split(". ")[0] for entry in current.history)
        current.history = [_trim(summary)]
    for name in ("hypotheses", "decisions", "open_issues", "constraints", "history"):
        while getattr(current, name) and token_budget(current, count) > budget:
            getattr(current, name).pop(0)
    limit = MAX_TEXT
    while token_budget(current, count) > budget and limit > 16:
        limit //= 2
        current.goals = [goal[:limit] for goal in current.goals]
        current.next_focus = current.next_focus[:limit]
    while len(current.goals) > 1 and token_budget(current, count) > budget:
        current.goals.pop()  # the first goal (the task's own) goes last
    if token_budget(current, count) > budget:
        log.warning("the smallest state (its first goal and focus cut to %d characters) takes %d tokens, over the budget of "
                    "%d: it is shown as it is; raise actors.state_token_budget", limit, token_budget(current, count), budget)
    return State.model_validate(current.model_dump())
