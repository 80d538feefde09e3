"""Redactor: every rule over a text, overlaps settled by specificity, matches replaced by typed placeholders."""

from __future__ import annotations

import bisect
import re
from collections import Counter
from typing import Any, NamedTuple

from trajforge.redaction import auth, keys, service_keys
from trajforge.redaction.cli_passwords import CliPasswordRule
from trajforge.redaction.config_formats import ConfigFormatSecretRule
from trajforge.redaction.env_secrets import EnvSecretRule, is_secret_field
from trajforge.redaction.identity_numbers import CreditCardRule, SsnRule
from trajforge.redaction.network import EmailRule, IpRule
from trajforge.redaction.phones import PhoneRule
from trajforge.redaction.rule import Rule, Span
from trajforge.redaction.settings import KINDS, RedactionSettings

_SHORTEST_FINDING = 6  # "a@b.co"; nothing shorter can hold a secret or PII worth a scan


class Found(NamedTuple):
    start: int
    end: int
    kind: str


class Redaction(NamedTuple):
    text: str
    counts: dict[str, int]
    """Kind (lower case) -> how many matches were replaced; empty when nothing was."""


def build_rules(settings: RedactionSettings) -> list[Rule]:
    """The enabled rules, most specific first (the order of KINDS)."""
    rules: list[Rule] = [
        keys.PRIVATE_KEY,
        keys.PrivateKeyTail(),
        *keys.PROVIDER_KEYS,
        *service_keys.TWILIO_KEYS,
        service_keys.PYPI_TOKEN,
        service_keys.GOOGLE_OAUTH_SECRET,
        service_keys.GOOGLE_ACCESS_TOKEN,
        keys.AWS_SECRET_KEY,
        auth.BASIC_AUTH,
        auth.STORED_BASIC_AUTH,
        auth.BEARER_TOKEN,
        auth.SessionCookieRule(),
        auth.URL_PASSWORD,
        auth.USER_FLAG_PASSWORD,
        service_keys.AZURE_SAS_SIGNATURE,
        CliPasswordRule(),
        EnvSecretRule(),
        ConfigFormatSecretRule(),
        EmailRule(),
        CreditCardRule(),
        SsnRule(),
        IpRule(settings.keep_loopback_ips),
        PhoneRule(settings.phone_regions),
    ]
    enabled = set(settings.kinds)
    return sorted((rule for rule in rules if rule.kind in enabled), key=lambda rule: KINDS.index(rule.kind))


def _placeholder_pattern(template: str) -> re.Pattern[str]:
    """Matches any placeholder the template can produce, so that a second pass leaves them alone."""
    parts = [re.escape(part) for part in template.split("{kind}")]
    return re.compile("[A-Z_]+".join(parts).replace(r"\{\{", r"\{").replace(r"\}\}", r"\}"))


def _merged(spans: list[Span]) -> tuple[list[int], list[int]]:
    starts: list[int] = []
    ends: list[int] = []
    for start, end in sorted(spans):
        if ends and start < ends[-1]:
            ends[-1] = max(ends[-1], end)
        else:
            starts.append(start)
            ends.append(end)
    return starts, ends


class Redactor:
    """Replaces secrets and PII in text with `[REDACTED:<KIND>]` and counts them per kind.

    Idempotent: existing placeholders and allowlisted strings are blocked before any rule's match
    is accepted, so redacting twice changes nothing the second time. Where matches overlap, the
    kind that comes first in KINDS wins and the others are dropped whole (a GitHub token inside
    `GITHUB_TOKEN=ghp_...` counts once, as github_token; a JWT after `Bearer` counts as jwt).
    Pickles as its settings; the rules are rebuilt on the other side.
    """

    def __init__(self, settings: RedactionSettings | None = None):
        self.settings = settings or RedactionSettings()
        self._rules = build_rules(self.settings)
        self._field_priority = next((index for index, rule in enumerate(self._rules) if rule.kind == "env_secret"), None)
        self._placeholder = _placeholder_pattern(self.settings.placeholder)
        self._placeholder_needle = self.settings.placeholder.split("{kind}")[0].replace("{{", "{").replace("}}", "}")
        self._allowlist = tuple(sorted({item for item in self.settings.allowlist if item}, key=len, reverse=True))

    def __reduce__(self):
        return (Redactor, (self.settings,))

    def find(self, text: str, field: str | None = None) -> list[Found]:
        """What `redact` would replace, in text order; `field`: the name the text is the value of (a dict key), so that
        a secret-named field's whole value is an env_secret as it would be in the JSON text `"field": "value"`."""
        candidates = []
        if field is not None and self._field_priority is not None and is_secret_field(field, text):
            candidates.append((self._field_priority, 0, len(text), "env_secret"))
        if len(text) < _SHORTEST_FINDING and not candidates:
            return []
        lowered = text.lower()
        for priority, rule in enumerate(self._rules):
            for needle in rule.needles:
                if needle in lowered:
                    break
            else:
                if rule.needles:
                    continue
            candidates += [(priority, start, end, rule.kind) for start, end in rule.spans(text, lowered) if end > start]
        if not candidates:
            return []
        # Taken spans never overlap, so their starts and ends sort alike and one bisect finds a clash.
        starts, ends = _merged(self._blocked(text))
        found = []
        for _, start, end, kind in sorted(candidates):
            index = bisect.bisect_right(ends, start)
            if index == len(ends) or starts[index] >= end:
                starts.insert(index, start)
                ends.insert(index, end)
                found.append(Found(start, end, kind))
        return sorted(found)

    def redact(self, text: str, field: str | None = None) -> Redaction:
        found = self.find(text, field)
        if not found:
            return Redaction(text, {})
        parts, position = [], 0
        for start, end, kind in found:
            parts += [text[position:start], self.settings.placeholder.format(kind=kind.upper())]
            position = end
        parts.append(text[position:])
        return Redaction("".join(parts), dict(Counter(kind for _, _, kind in found)))

    def redact_tree(self, value: Any) -> tuple[Any, Counter]:
        """A copy of a JSON-like value with every str leaf redacted (dict keys are kept, and name their values: the
        str value of a secret-named key is judged as `"key": "value"` would be), and the counts."""
        counts: Counter = Counter()
        return self._redact_value(value, counts), counts

    def _redact_value(self, value: Any, counts: Counter, field: str | None = None) -> Any:
        if isinstance(value, str):
            redaction = self.redact(value, field)
            counts.update(redaction.counts)
            return redaction.text
        if isinstance(value, dict):
            return {key: self._redact_value(item, counts, key if isinstance(key, str) else None) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self._redact_value(item, counts) for item in value)
        return value

    def _blocked(self, text: str) -> list[Span]:
        """Spans no match may touch: placeholders already in the text, and allowlisted strings."""
        blocked = []
        if self._placeholder_needle in text:
            blocked += [match.span() for match in self._placeholder.finditer(text)]
        for literal in self._allowlist:
            start = text.find(literal)
            while start != -1:
                blocked.append((start, start + len(literal)))
                start = text.find(literal, start + 1)
        return blocked
