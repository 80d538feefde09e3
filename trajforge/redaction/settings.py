"""RedactionSettings: the `redaction:` section of configs/pipeline.yaml, and the kinds it can name."""

from __future__ import annotations

from string import Formatter
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator, model_validator

Kind = Literal[
    "private_key",
    "aws_access_key",
    "github_token",
    "gitlab_token",
    "anthropic_key",
    "openai_key",
    "slack_token",
    "stripe_key",
    "sendgrid_key",
    "twilio_key",
    "pypi_token",
    "google_api_key",
    "npm_token",
    "huggingface_token",
    "jwt",
    "aws_secret_key",
    "basic_auth",
    "bearer_token",
    "url_password",
    "cli_password",
    "env_secret",
    "email",
    "credit_card",
    "ssn",
    "ip_address",
    "phone",
]
KINDS: tuple[str, ...] = get_args(Kind)
"""Every kind, most specific first: where two matches overlap, the one whose kind comes first wins."""

RULES_VERSION = 13
"""Bumped whenever the rules find something else in the same text (a new shape, a miss or a false positive fixed).
The settings' dump carries it, so the build's config hash changes and the next build redacts every session again
instead of reusing rows that older rules redacted. 1: up to 2026-12-06; 2: passphrases, Twilio, PyPI, command-line
passwords, payment cards, SSNs, Slack app tokens, Google OAuth secrets, Azure SAS signatures, connection strings;
3: a one-word label in any alphabet (`"password": "Contraseña"`) and more prose (`"same as before"`) kept;
4: the provenance API's own `sk_` tokens, bare; 5: the value of a secret-named key in structured data (`{"DB_PASSWORD": "..."}`
in a tool call's arguments), judged as its JSON text is; 6: `aws configure`'s `AWS Secret Access Key [None]: ...` prompt;
7: the base64 lines and END line of a private key whose BEGIN line is in another text; 8: passwords SQL statements set
(`CREATE USER ... WITH PASSWORD '...'`, `IDENTIFIED BY '...'`, `PASSWORD('...')`); 9: a registry's `"auth"` in Docker's
config.json and an .npmrc's `_auth=`; 10: such a key's END line after a diff's line marker;
11: a quoted path to a secret's file (`"private_key": "./certs/server.key"`) kept, as an unquoted one was; 12: a password
piped to `sudo -S`, and `htpasswd -b`'s; 13: session cookies (`Set-Cookie: sessionid=...`, `curl -b`)."""


class RedactionSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kinds: list[Kind] = Field(default_factory=lambda: list(KINDS))
    """Kinds to detect and replace (lower-case); a kind left out is kept verbatim."""
    placeholder: str = "[REDACTED:{kind}]"
    """What replaces a match; `{kind}` becomes the kind in upper case. Existing placeholders are never re-matched."""
    allowlist: list[str] = []
    """Literal strings never redacted, e.g. a public demo address; a match inside one of them is kept."""
    keep_loopback_ips: bool = True
    """Keep loopback, unspecified, netmask and metadata-service addresses (127.0.0.1, 0.0.0.0, ::1, 255.255.255.0,
    169.254.169.254): they name no host."""
    phone_regions: list[str] = ["US", "GB", "DE"]
    """Regions (ISO 3166 codes) whose national formats count as phones; `+<country>` numbers are found in any case."""

    @computed_field
    @property
    def rules_version(self) -> int:
        """RULES_VERSION, in every dump of the settings (the build's config hash and manifest); not a setting."""
        return RULES_VERSION

    @model_validator(mode="before")
    @classmethod
    def _dumped_rules_version(cls, data: object) -> object:
        """A dump read back (the build ships its settings to Ray tasks as JSON) carries rules_version: dropped when it
        is this code's, refused otherwise (rows of other rules, or someone trying to set it)."""
        if isinstance(data, dict) and "rules_version" in data:
            data = dict(data)
            if data.pop("rules_version") != RULES_VERSION:
                raise ValueError(f"rules_version is the redaction code's ({RULES_VERSION}), not a setting: remove it")
        return data

    @field_validator("kinds", mode="before")
    @classmethod
    def _lower_kinds(cls, kinds: object) -> object:
        return [kind.lower() if isinstance(kind, str) else kind for kind in kinds] if isinstance(kinds, list) else kinds

    @field_validator("placeholder")
    @classmethod
    def _one_kind_field(cls, placeholder: str) -> str:
        fields = {name for _, name, _, _ in Formatter().parse(placeholder) if name is not None}
        if not placeholder or fields - {"kind"}:
            raise ValueError("the placeholder may use only the field {kind}, e.g. '[REDACTED:{kind}]'")
        return placeholder

    @field_validator("phone_regions")
    @classmethod
    def _known_regions(cls, regions: list[str]) -> list[str]:
        import phonenumbers

        regions = [region.upper() for region in regions]
        unknown = sorted(set(regions) - phonenumbers.SUPPORTED_REGIONS)
        if unknown:
            raise ValueError(f"unknown phone regions {unknown}; use ISO 3166 codes such as US, GB, DE")
        return regions
