"""More credentials with a fixed shape: Twilio, PyPI, Google OAuth secrets and tokens, Azure SAS signatures.

Twilio (twilio_key): an Account SID (`AC` + 32 lower-case hex) or an API key SID (`SK` + 32 hex) anywhere;
an auth token (32 hex, no prefix of its own) where Twilio names it (`TWILIO_AUTH_TOKEN=...`, an `auth_token:`
up to 200 characters after the word twilio, as in a `twilio:` YAML section) or where it follows an Account SID as `Client("AC...", "<token>")` does.
A bare 32-hex string is an MD5 as often as anything, so the token is never taken without that context.
PyPI (pypi_token): an upload token, a macaroon whose base64 always starts `pypi-AgEIcHlwaS5vcmc`
(`pypi.org`) or `pypi-AgENdGVzdC5weXBpLm9yZw` (`test.pypi.org`).
google_api_key also takes Google's OAuth client secrets (`GOCSPX-` + 28) and access tokens (`ya29.`).
url_password also takes the `sig=` of an Azure SAS URL (one with `sv=` too): the signature is the
credential; the resource, permissions and expiry stay.
"""

from __future__ import annotations

import re

from trajforge.redaction.rule import PatternRule
from trajforge.redaction.values import looks_random

_HEX_END = r"(?![A-Za-z0-9_])"
_ASSIGN = r"[\"']?[ \t]*(?::=|=>|=|:)[ \t]*[\"']?"


def _random_hex(match: re.Match[str], text: str) -> bool:
    return looks_random(match.group("hex"))


# `(?:AC|SK)` first and the word edge checked after it: a leading `\b` would stop the engine from skipping
# ahead to the literal, and "ac" and "sk" are in nearly every text, so this scan runs on most of them.
TWILIO_KEYS = (
    PatternRule("twilio_key", re.compile(r"(?:AC|SK)(?<![\w]..)(?P<hex>[0-9a-f]{32})" + _HEX_END), ("ac", "sk"), accept=_random_hex),
    PatternRule(
        "twilio_key",
        re.compile(r"(?i:\btwilio\w*?auth\w*?token|\btwilio\b(?s:.){0,200}?\bauth_?token)" + _ASSIGN + r"(?P<hex>[0-9a-f]{32})" + _HEX_END),
        ("twilio",),
        group="hex",
        accept=_random_hex,
    ),
    PatternRule(
        "twilio_key",  # Client("AC...", "<auth token>"): the token follows the Account SID
        re.compile(r"AC(?<![\w]..)[0-9a-f]{32}[\"'][ \t]*,[ \t]*[\"'](?P<hex>[0-9a-f]{32})[\"']"),
        ("client",),
        group="hex",
        accept=_random_hex,
    ),
)

PYPI_TOKEN = PatternRule(
    "pypi_token",
    re.compile(r"\bpypi-(?:AgEIcHlwaS5vcmc|AgENdGVzdC5weXBpLm9yZw)[A-Za-z0-9_-]{40,}" + r"(?![A-Za-z0-9_-])"),
    ("pypi-",),
)

GOOGLE_OAUTH_SECRET = PatternRule(
    "google_api_key",
    re.compile(r"\bGOCSPX-[A-Za-z0-9_-]{28}(?![A-Za-z0-9_-])"),
    ("gocspx-",),
    accept=lambda match, text: looks_random(match.group()[7:]),
)

# An OAuth access token from Google's token endpoint (`gcloud auth print-access-token`): short-lived, still a credential.
GOOGLE_ACCESS_TOKEN = PatternRule(
    "google_api_key",
    re.compile(r"\bya29\.[A-Za-z0-9_-]{30,}(?![A-Za-z0-9_-])"),
    ("ya29.",),
    accept=lambda match, text: looks_random(match.group()[5:]),
)

AZURE_SAS_SIGNATURE = PatternRule(
    "url_password",
    re.compile(r"[?&=]sv=\d{4}-\d\d-\d\d&[^\s\"'<>]*?\bsig=(?P<sig>[A-Za-z0-9%+/=]{20,})"),
    ("sig=",),
    group="sig",
)
