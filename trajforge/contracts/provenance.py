"""Provenance events of agent-written code (seed 003, STEREOS): what `POST /v1/events` takes besides telemetry.

Two event types, told apart by `event_type`:
- `agent_action`: an agent (`actor_type`, `actor_id`) used a `tool` with an `intent` (and a `model`), wrote
  `files_written`, in `repo` on `branch` at `commit`; `timestamp` (ISO 8601) defaults to when it was received.
- `outcome`: what became of an earlier action (`original_event_id`): `status` accepted, rejected or superseded,
  and the commit it landed in (`linked_commit`).
The seed's field names are kept as they are. Fields beyond these are ignored by the index but kept in the raw lake.
Also here: the API tokens' request bodies and roles.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

from trajforge.contracts.envelope import rejection_from

AGENT_ACTION, OUTCOME = "agent_action", "outcome"
PROVENANCE_TYPES = (AGENT_ACTION, OUTCOME)
OUTCOME_STATUSES = ("accepted", "rejected", "superseded")
ROLES = ("admin", "user")
TOKEN_PREFIX = "sk_"
PRICES_USD = {AGENT_ACTION: 0.01, OUTCOME: 0.005}
"""Seed 003's pay-as-you-go prices per event, which a user profile's usage is costed at (nothing is charged here)."""

Name = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Text = Annotated[str, StringConstraints(min_length=1, max_length=4000)]
Ref = Annotated[str, StringConstraints(min_length=1, max_length=256)]
FilePath = Annotated[str, StringConstraints(min_length=1, max_length=1024)]


class AgentAction(BaseModel):
    model_config = ConfigDict(extra="ignore")

    event_type: Literal["agent_action"]
    actor_type: Name
    actor_id: Name
    tool: Name
    intent: Text
    model: Name | None = None
    files_written: list[FilePath] = Field(default_factory=list, max_length=10000)
    timestamp: datetime | None = None
    repo: Ref
    branch: Ref | None = None
    commit: Ref
    diff_hash: Ref | None = None

    @field_validator("timestamp")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        """A time without a zone is UTC."""
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class Outcome(BaseModel):
    model_config = ConfigDict(extra="ignore")

    event_type: Literal["outcome"]
    original_event_id: Ref
    status: Literal["accepted", "rejected", "superseded"]
    linked_commit: Ref | None = None

    @field_validator("original_event_id")
    @classmethod
    def _event_id(cls, value: str) -> str:
        """The `event_id` an agent_action was answered with: a UUID (any case; kept in its lowercase form)."""
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise ValueError("must be the event_id (a UUID) that POST /v1/events answered for the agent_action") from None


ProvenanceEvent = AgentAction | Outcome


class Rejected(ValueError):
    """A provenance event that does not validate: `field` and `rule` name what failed."""

    def __init__(self, field: str | None, rule: str, message: str):
        super().__init__(message)
        self.field, self.rule = field, rule


def is_provenance(value: Any) -> bool:
    """Whether a parsed JSON value is a provenance event (as opposed to a Starcode telemetry event)."""
    return isinstance(value, dict) and value.get("event_type") in PROVENANCE_TYPES


def parse_provenance(value: Any) -> ProvenanceEvent:
    """The event, or Rejected naming the first field that failed (`event_type`, `actor_id`, `timestamp`, ...)."""
    if not isinstance(value, dict):
        raise Rejected(None, "type", "an event must be a JSON object")
    model = AgentAction if value.get("event_type") == AGENT_ACTION else Outcome if value.get("event_type") == OUTCOME else None
    if model is None:
        raise Rejected("event_type", "literal_error", f"event_type: must be one of {', '.join(PROVENANCE_TYPES)}")
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        problem = rejection_from(exc)
        raise Rejected(problem.field, problem.rule, str(problem)) from None


def stored_form(raw: dict[str, Any], event: ProvenanceEvent, keep_unknown: bool = False) -> dict[str, Any]:
    """What the lake keeps of an event as sent: its contract's fields only (seed 003: "no raw prompt text stored by
    default": a `prompt`, `messages` or any other field the contract lacks is not written), or, with `keep_unknown`,
    all of it."""
    if keep_unknown:
        return raw
    return {name: value for name, value in raw.items() if name in type(event).model_fields}


class TokenRequest(BaseModel):
    """`POST /v1/tokens`: the seed's `{"customer_id", "name"}`, and optionally the role (an admin's to give)."""

    model_config = ConfigDict(extra="forbid")

    customer_id: Name
    name: Name
    role: Literal["admin", "user"] | None = None
    signing_key: str | None = None
    """Seed 003's optional event signing: the base64 Ed25519 public key whose signature this token's events must carry
    (`trajforge.contracts.event_signing`)."""

    @field_validator("signing_key")
    @classmethod
    def _signing_key(cls, value: str | None) -> str | None:
        from trajforge.contracts.event_signing import checked_public_key

        return None if value is None else checked_public_key(value)


class RoleUpdate(BaseModel):
    """`PATCH /v1/users/{id}/role`."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["admin", "user"]


def iso(epoch: float) -> str:
    """An epoch time as the API shows times: ISO 8601 UTC with milliseconds, `2026-02-07T12:00:00.000Z` (JavaScript's
    toISOString)."""
    whole = int(epoch)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{int(round((epoch - whole) * 1000)) % 1000:03d}Z"
