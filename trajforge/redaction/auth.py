"""Credentials in a URL or an HTTP Authorization header; only the credential itself is replaced.

url_password keeps scheme, user and host (`postgres://admin:[REDACTED:URL_PASSWORD]@db:5432/app`, and
`curl -u user:[REDACTED:URL_PASSWORD]`), and leaves placeholders (`${PW}`, `<password>`, `password`)
alone. A provider token in the password slot (`https://x-access-token:ghp_...@github.com`) is caught
by its own, more specific rule first.
bearer_token wants a generated-looking token (`Bearer <token>`, `Bearer ${TOKEN}`, `bearer token` are
prose or templates); a JWT after `Bearer` counts as jwt. basic_auth is a `Basic` credential that
really decodes to `user:password`, so `Basic authentication` never matches; so are the `"auth"` of a registry in
Docker's `config.json` (`cat ~/.docker/config.json`) and `_auth=` in an `.npmrc`, the same base64 of `user:password`.
A session cookie (`Cookie:`/`Set-Cookie:` headers, `curl -b`: a line that says cookie, or curl's -b) is a bearer_token when its
name says session or auth (`sessionid`, `PHPSESSID`, `connect.sid`, `laravel_session`, `remember_token`) and its value
looks generated: `theme=dark`, `csrftoken`'s name (env_secret's) and `session=1` are not.
"""

from __future__ import annotations

import base64
import binascii
import re

from collections.abc import Iterator

from trajforge.redaction.rule import PatternRule, Rule, Span
from trajforge.redaction.values import is_placeholder, looks_random

URL_PASSWORD = PatternRule(
    "url_password",
    re.compile(r"(?i)\b[a-z][a-z0-9+.-]{1,30}://[^\s:/?#@\[\]\"'<>]*:(?P<password>[^\s/\"'<>]+)@(?=[\w\[.-])"),
    ("://",),
    group="password",
    accept=lambda match, text: not is_placeholder(match.group("password")),
)

# `curl -u user:password` (only curl's: `docker run -u app:app` is a user and a group).
USER_FLAG_PASSWORD = PatternRule(
    "url_password",
    re.compile(r"\bcurl\b[^\n]{0,300}?(?:\s-u[ \t]*|\s--user[ \t=])[\"']?[^\s:\"'@]+:(?P<password>[^\s\"'@]+)(?=[\"']?(?:\s|$))"),
    ("curl",),
    group="password",
    accept=lambda match, text: not is_placeholder(match.group("password")),
)

_TOKEN = r"(?P<token>[A-Za-z0-9._~+/-]{12,}=*)(?![A-Za-z0-9._~+/=-])"
BEARER_TOKEN = PatternRule(
    "bearer_token",
    re.compile(r"(?i)(?:\bbearer[ \t]+|\bauthorization[\"']?[ \t]*[:=][ \t]*[\"']?token[ \t]+)" + _TOKEN),
    ("bearer", "authorization"),
    group="token",
    accept=lambda match, text: looks_random(match.group("token")) and not is_placeholder(match.group("token")),
)


def _is_basic_credentials(match: re.Match[str], text: str) -> bool:
    try:
        decoded = base64.b64decode(match.group("token"), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return False
    return ":" in decoded and decoded.isprintable()


BASIC_AUTH = PatternRule(
    "basic_auth",
    re.compile(r"(?i)\bbasic[ \t]+(?P<token>[A-Za-z0-9+/]{8,}={0,2})(?![A-Za-z0-9+/=])"),
    ("basic",),
    group="token",
    accept=_is_basic_credentials,
)


# `{"auths": {"ghcr.io": {"auth": "<base64 user:password>"}}}`, also JSON-escaped inside a string; `_auth=<base64>` (.npmrc)
STORED_BASIC_AUTH = PatternRule(
    "basic_auth",
    re.compile(r"""(?:\\?"auth\\?"[ \t]*:[ \t]*\\?"|(?<![\w-])_auth[ \t]*=[ \t]*)(?P<token>[A-Za-z0-9+/]{8,}={0,2})(?![A-Za-z0-9+/=])"""),
    ('auth"', 'auth\\"', "_auth"),
    group="token",
    accept=_is_basic_credentials,
)


_COOKIE_NAME_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-"
_COOKIE_VALUE = re.compile(r"[^;\s\"',]{16,4096}")
_SESSION_NAME = re.compile(r"(?i)sess|(?:^|[_.-])sid$|auth(?!or)|remember|login")
_CURL_COOKIE_FLAG = re.compile(r"[ \t]-b[ \t]")


class SessionCookieRule(Rule):
    kind = "bearer_token"
    needles = ("cookie", "curl")

    def spans(self, text: str, lowered: str) -> Iterator[Span]:
        # Line by line, each `=` once: linear in the text, however long its lines.
        position = 0
        for line in text.split("\n"):
            end, line = position + len(line), line.lower()
            if "cookie" in line or "curl" in line and _CURL_COOKIE_FLAG.search(line):
                equals = text.find("=", position, end)
                while equals != -1:
                    window = text[max(position, equals - 64) : equals]
                    name = window[len(window.rstrip(_COOKIE_NAME_CHARS)) :]
                    value = _COOKIE_VALUE.match(text, equals + 1, end)
                    if name and value and _SESSION_NAME.search(name) and looks_random(value.group()) and not is_placeholder(value.group()):
                        yield value.span()
                    equals = text.find("=", value.end() if value else equals + 1, end)
            position = end + 1
