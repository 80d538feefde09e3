"""Telemetry events of the Starcode agents (seed 000): what `POST /v1/events` takes and the raw lake keeps.

Four event types: `conversation.turn` (a user message, the model's answer and its tool calls and
`tool_results`), `model.behavior` (a trace of what the model did), `model.error` (a model failure) and
`session.meta` (the session's metadata). The type is `event_type` (or `type`, as some SDKs name it).
Everything else an event carries is kept as sent: the server checks only what it files the event
under (type, organisation) and what it deduplicates on (`event_id`), so a newer agent's extra fields
are never lost. JavaScript's camelCase names are read too (`eventType`, `eventId` or `id`, `orgId` or `org`,
`sessionId`). An event without an id gets the sha256 of its own bytes, so resending the same event
is still recognised as a duplicate.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from trajforge.contracts.envelope import EnvelopeRejected, rejection_from

EVENT_TYPES = ("conversation.turn", "model.behavior", "model.error", "session.meta")
EventType = Literal["conversation.turn", "model.behavior", "model.error", "session.meta"]
DEFAULT_ORG = "default"
_UNSAFE_IN_PATH = re.compile(r"[^A-Za-z0-9._-]")
_SURROGATE = re.compile("[\ud800-\udfff]")  # in a parsed str every surrogate is lone: JSON's escaped pairs decode to one character


class TelemetryEvent(BaseModel):
    """The fields the server reads; the rest of the event rides along untouched."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    event_type: EventType = Field(validation_alias=AliasChoices("event_type", "type", "eventType"))
    event_id: str | None = Field(default=None, min_length=1, max_length=128, validation_alias=AliasChoices("event_id", "eventId", "id"))
    org_id: str | None = Field(default=None, min_length=1, max_length=100, validation_alias=AliasChoices("org_id", "orgId", "org"))
    session_id: str | None = Field(default=None, min_length=1, max_length=200, validation_alias=AliasChoices("session_id", "sessionId"))
    timestamp: str | float | None = None
    """ISO 8601 or epoch seconds/milliseconds, as the agent sent it (the raw lake files events by received date)."""
    payload: dict[str, Any] | None = None


def parse_event(value: Any) -> TelemetryEvent:
    """The event, or ValidationError naming the field (`event_type` must be one of EVENT_TYPES)."""
    if not isinstance(value, dict):
        raise TypeError("an event must be a JSON object")
    if (field := lone_surrogate_field(value)) is not None:  # JSON carries it as an escape, but no UTF-8 file can hold it
        raise EnvelopeRejected(field, "lone_surrogate", "holds a lone UTF-16 surrogate, which is not text: send whole characters")
    return TelemetryEvent.model_validate(value)


def lone_surrogate_field(value: Any) -> str | None:
    """The dotted path of a string (or key) in a parsed JSON value that holds a lone UTF-16 surrogate; None
    when there is none. Iterative: a body nested as deeply as the parser allows is walked without recursion."""
    pending: list[tuple[str, Any]] = [("", value)]
    while pending:
        path, item = pending.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return path
        elif isinstance(item, dict):
            for key, child in reversed(item.items()):
                where = f"{path}.{key}" if path else str(key)
                if _SURROGATE.search(str(key)):
                    return where.encode("utf-8", "backslashreplace").decode()
                pending.append((where, child))
        elif isinstance(item, list):
            pending.extend((f"{path}.{index}" if path else str(index), child) for index, child in reversed(list(enumerate(item))))
    return None


def event_rejection(index: int, exc: Exception) -> dict[str, Any]:
    """What the 400 says about the event at `index` of a request: its field and rule, or why it is not an object."""
    if isinstance(exc, (ValidationError, EnvelopeRejected)):
        problem = rejection_from(exc) if isinstance(exc, ValidationError) else exc
        return {"index": index, "field": problem.field, "rule": problem.rule, "message": str(problem)}
    return {"index": index, "field": None, "rule": "type", "message": str(exc)}


def event_id_of(event: TelemetryEvent, raw: dict[str, Any]) -> str:
    """The event's own id, or `sha256:<hex>` of its canonical JSON when it has none."""
    if event.event_id:
        return event.event_id
    canonical = json.dumps(raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def partition_name(value: str) -> str:
    """A folder-safe form of an organisation id (`org=<name>`); the record keeps the id exactly as sent."""
    return _UNSAFE_IN_PATH.sub("_", value)[:100] or "_"
