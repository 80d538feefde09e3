"""The Central Command envelopes (seed 004, `envelope-schema.js`): CHUNK, SESSION_CLOSE, USER_FEEDBACK.

Models are strict (a string is never coerced into a number) and keep unknown keys, because the exact
JSON received is what gets stored and signed. `validate_envelope` is the one entry point.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from trajforge import constants as c
from trajforge.contracts.fields import (
    AgentId,
    AgentRole,
    GrooveVersion,
    Hex32,
    Hex64,
    Identifier,
    NonNegInt,
    Sequence,
    StepContent,
    Timestamp,
    Unit,
)
from trajforge.errors import ProtocolError

StepType = Literal[c.STEP_TYPES]  # type: ignore[valid-type]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow", frozen=True)


class Attestation(_Strict):
    session_hmac: Hex64
    sequence: Sequence
    app_version_hash: Hex64


class Step(_Strict):
    step: int = Field(ge=0, le=c.MAX_STEP_NUMBER)
    type: StepType
    timestamp: Timestamp
    content: StepContent | None = None
    token_count: int | None = Field(default=None, ge=0, le=c.MAX_STEP_TOKEN_COUNT)
    tool: str | None = None
    arguments: dict[str, Any] | None = None


class DomainTag(_Strict):
    domain: str
    confidence: Unit


class DomainTags(_Strict):
    primary: DomainTag
    secondary: DomainTag | None = None
    tertiary: DomainTag | None = None


class SessionEmbedding(_Strict):
    model: str
    vector: list[float] = Field(min_length=1)
    source_text: str


class Routing(_Strict):
    leaf_id: str
    routing_confidence: Unit
    fallback_used: bool
    leaf_lifecycle_stage: str | None = None
    parent_leaf_id: str | None = None


class LeafContext(_Strict):
    leaf_id: str
    leaf_version: str | int
    confidence_at_route: Unit
    chassis_model: str


class Metadata(_Strict):
    provider: str | None = None
    model_engine: str | None = None
    agent_role: AgentRole | None = None
    agent_id: AgentId | None = None
    team_size: int | None = Field(default=None, ge=c.TEAM_SIZE_RANGE[0], le=c.TEAM_SIZE_RANGE[1])
    task_complexity: Literal[c.COMPLEXITIES] | None = None  # type: ignore[valid-type]
    groove_version: GrooveVersion | None = None
    domain_tags: DomainTags | None = None
    session_embedding: SessionEmbedding | None = None
    routing: Routing | None = None
    leaf_context: LeafContext | None = None
    session_quality: float | None = Field(default=None, ge=0, le=100)


class Outcome(_Strict):
    status: Literal[c.OUTCOME_STATUSES]  # type: ignore[valid-type]
    session_quality: float | None = Field(default=None, ge=0, le=100)
    quality_tier: Literal[c.QUALITY_TIERS] | None = None  # type: ignore[valid-type]
    quality_tier_reason: str | None = None
    user_interventions: NonNegInt | None = None
    total_steps: NonNegInt | None = None
    total_chunks: NonNegInt | None = None
    total_tokens: NonNegInt | None = None
    duration_seconds: float | None = Field(default=None, ge=0)
    files_modified: NonNegInt | None = None
    errors_encountered: NonNegInt | None = None
    errors_recovered: NonNegInt | None = None
    coordination_events: NonNegInt | None = None
    training_eligible: bool | None = None
    training_exclusion_reason: Literal[c.TRAINING_EXCLUSION_REASONS] | None = None  # type: ignore[valid-type]


class Feedback(_Strict):
    signal: Literal[c.FEEDBACK_SIGNALS]  # type: ignore[valid-type]
    timestamp: Timestamp
    context: str | None = None
    target_step: int | None = Field(default=None, ge=0, le=c.MAX_STEP_NUMBER)
    revision_rounds: NonNegInt | None = None
    delta_summary: str | None = None


class _Envelope(_Strict):
    session_id: Identifier
    attestation: Attestation


class ChunkEnvelope(_Envelope):
    type: Literal["CHUNK"] | None = None
    chunk_sequence: Sequence
    contributor_id: Hex32
    metadata: Metadata
    trajectory_log: list[Step] = Field(max_length=c.MAX_STEPS_PER_ENVELOPE)  # the specification sets no minimum: an empty chunk is valid


class CloseEnvelope(_Envelope):
    type: Literal["SESSION_CLOSE"]
    contributor_id: Hex32 | None = None
    metadata: Metadata | None = None
    outcome: Outcome | None = None  # the client's report, kept for comparison; scoring reads the steps, so a close may omit it


class FeedbackEnvelope(_Envelope):
    type: Literal["USER_FEEDBACK"]
    contributor_id: Hex32 | None = None
    feedback: Feedback


EnvelopeKind = Literal["CHUNK", "SESSION_CLOSE", "USER_FEEDBACK"]
_MODEL_BY_KIND: dict[str | None, type[_Envelope]] = {
    None: ChunkEnvelope,
    "CHUNK": ChunkEnvelope,
    "SESSION_CLOSE": CloseEnvelope,
    "USER_FEEDBACK": FeedbackEnvelope,
}


class EnvelopeRejected(ProtocolError):
    """The envelope breaks the schema; `field` is the dotted path and `rule` the broken rule."""

    def __init__(self, field: str, rule: str, message: str):
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.rule = rule


def envelope_kind(envelope: dict[str, Any]) -> EnvelopeKind:
    """CHUNK, SESSION_CLOSE or USER_FEEDBACK; raises EnvelopeRejected for anything else."""
    kind = envelope.get("type")
    if kind not in _MODEL_BY_KIND:
        raise EnvelopeRejected("type", "literal_error", "type must be absent, CHUNK, SESSION_CLOSE or USER_FEEDBACK")
    return "CHUNK" if kind is None else kind


def validate_envelope(envelope: Any, *, now: float | None = None) -> _Envelope:
    """Validate a parsed envelope; the rejection names the first failing field and its rule."""
    if not isinstance(envelope, dict):
        raise EnvelopeRejected("", "type_error", "an envelope must be a JSON object")
    model = _MODEL_BY_KIND[envelope_kind(envelope)]
    try:
        return model.model_validate(envelope, context={"now": now})
    except ValidationError as exc:
        raise rejection_from(exc) from None


# What pydantic adds to an error's location for the branch of a union it tried (`str`, `list[Step]`, `Step`,
# `function-after[...]`, ...): not part of the field's path. Our field names are snake_case, so none is taken for one.
_UNION_BRANCH = re.compile(r"(str|int|float|bool|bytes|none|[a-z-]+\[.*\]|[A-Z]\w*)")


def rejection_from(exc: ValidationError) -> EnvelopeRejected:
    first = exc.errors(include_url=False)[0]
    field = ".".join(str(part) for part in first["loc"] if not (isinstance(part, str) and _UNION_BRANCH.fullmatch(part)))
    message = first["msg"]
    if first["type"] == "missing":
        message = "field required"
    return EnvelopeRejected(field, first["type"], message)
