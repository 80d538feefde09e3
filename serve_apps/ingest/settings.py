"""Settings of the ingest application (`applications[name=ingest].args` in configs/serve.yaml)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from serve_apps.ratelimit import AddressLimits
from trajforge import constants as c
from trajforge.settings.serve_file import load_app_args

APP_NAME = "ingest"
HEAD_NODE = "node:__internal_head__"  # the resource Ray gives the head node alone (1 of it)


class RateLimits(AddressLimits):
    sessions_per_machine_per_hour: int = Field(default=20, ge=0)
    """Sessions one machine_fingerprint may open per hour (0: no limit). Counted in the registry."""
    envelopes_per_session: int = Field(default=200, ge=0)
    """Envelopes one session may store (0: no limit)."""


class EventSettings(BaseModel):
    """`POST /v1/events`, the Starcode telemetry endpoint (seed 000)."""

    model_config = ConfigDict(extra="forbid")

    api_keys: list[str] = []
    """Keys accepted in `x-company-api-key`, besides those in `api_keys_env`. With none at all, the endpoint is open."""
    api_keys_env: str | None = "INGEST_API_KEYS"
    """Environment variable with more keys, comma-separated (Starcode's `INGEST_API_KEYS`)."""
    max_events: int = Field(default=1000, ge=1)
    """Most events one request may carry (more: 413)."""


class ProvenanceSettings(BaseModel):
    """The provenance API (seed 003): API tokens, `agent_action`/`outcome` events on `POST /v1/events`, the queries."""

    model_config = ConfigDict(extra="forbid")

    admin_keys: list[str] = []
    """Bootstrap keys (`Authorization: Bearer <key>`) that may make tokens of any customer and role and manage them,
    besides those in `admin_keys_env`. With none at all, `POST /v1/tokens` is open (say so in the log): for a
    deployment only this host reaches."""
    admin_keys_env: str | None = "TRAJFORGE_ADMIN_KEYS"
    """Environment variable with more admin keys, comma-separated."""
    search_limit: int = Field(default=50, ge=1)
    """`GET /v1/events/search`'s `limit` when none is given."""
    max_search_limit: int = Field(default=100, ge=1)
    """The most events one search answers (a larger `limit` is cut to it)."""
    max_linked_events: int = Field(default=1000, ge=1)
    """The most events `by-commit` and `by-file` answer at once (their default `limit`; page on with `offset`)."""
    max_events: int = Field(default=100, ge=1)
    """Most provenance events one `POST /v1/events` may carry (more: 413)."""
    keep_unknown_fields: bool = False
    """Seed 003: "no raw prompt text stored by default": fields an event carries outside its contract (a `prompt`,
    `messages`, ...) are dropped before it is written. True stores events exactly as sent."""


class IngestSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lake: Path = Path("./lake")
    """Root of the lake: raw segments, the registry database and the key file live under it."""
    num_replicas: int = Field(default=1, ge=1)
    """Serve replicas of the ingest deployment; they share the registry and write separate segments."""
    num_cpus: float = Field(default=0.5, ge=0)
    """CPUs Ray reserves for each replica."""
    resources: dict[str, float] = Field(default_factory=lambda: {HEAD_NODE: 0.001})
    """Ray resources each replica asks for besides its CPUs. By default a sliver of the head node's own resource, so
    that every replica runs on the head node, whose disk holds the lake and its SQLite registry (Serve would place
    replicas on any node of a cluster, each writing its own disk). `{}` lets them run anywhere: only for a lake on
    storage every node sees at the same path."""
    max_ongoing_requests: int = Field(default=256, ge=1)
    """Requests one replica handles at once; high so that group commit can gather many."""
    max_body_bytes: int = Field(default=c.MAX_BODY_BYTES, ge=1024)
    """Larger bodies are answered 413."""
    max_batch_envelopes: int = Field(default=c.MAX_BATCH_ENVELOPES, ge=1)
    """Most envelopes one `/v1/training/ingest:batch` request may carry."""
    rate_limits: RateLimits = RateLimits()
    """The specification's rate limits."""
    events: EventSettings = EventSettings()
    """Starcode telemetry events at `POST /v1/events`."""
    provenance: ProvenanceSettings = ProvenanceSettings()
    """Provenance events, API tokens and the provenance queries (seed 003)."""
    trusted_proxies: list[str] = []
    """Peers (IPs or CIDRs) whose X-Forwarded-For is believed; from anyone else it is ignored."""
    embed_app: str | None = "embed"
    """The Serve application that answers OpenAI's `POST /v1/embeddings` here (null: 404)."""
    secret_key_env: str = "TRAJFORGE_SECRET_KEY"
    """Environment variable holding the base64 32-byte key that encrypts session secrets at rest."""
    key_file: Path | None = None
    """Key file used when the variable is unset (created 0600 at first start); default <lake>/keys/ingest.key."""
    segment_max_bytes: int = Field(default=256 * 1024 * 1024, ge=1024)
    """A replica starts a new raw segment past this size (and at every UTC date change)."""
    group_commit_max_envelopes: int = Field(default=2000, ge=1)
    """Most envelopes written and fsync'd in one group commit."""


def load_settings(args: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> IngestSettings:
    """Validate builder args after applying `TRAJFORGE__INGEST__...` environment variables."""
    return load_app_args(IngestSettings, APP_NAME, args, environ)
