"""Secrets known by their context: a secret-named assignment, a URL's password, an Authorization header.

Only the value is replaced, so `DB_PASSWORD=[REDACTED:ENV_SECRET]` still teaches what the line does.

env_secret is the rule most at risk of eating code, so it says no to anything that reads a secret
rather than holding one: `os.environ["API_TOKEN"]` (no assignment), `password = getpass()` and
`token=os.getenv("T")` (calls, attribute access), `password=None`, `token: str` (type annotations),
`SECRET_KEY: Final = ...`, `private_key: ~/.ssh/id_ed25519` (a path to the secret, not the secret),
`password=password` (a lower-case name given a bare identifier is a variable, not a value; an
UPPER_CASE name is an env file, where `POSTGRES_PASSWORD=postgres` is the value), `${VAR}` and the
placeholders of `values.is_placeholder`. Names must end in a secret noun (`..._PASSWORD`, `..._TOKEN`,
`client_secret`, `api_key`), so `token_count`, `max_tokens`, `sort_key` and the tokenizer's `eos_token`
are left alone. Known misses: a lower-case name given an unquoted word without digits
(`password: hunter`), XML elements, values split over lines.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator

from trajforge.redaction.rule import PatternRule, Rule, Span
from trajforge.redaction.values import is_placeholder, looks_random

_SECRET_NOUNS = ("password", "passwd", "passphrase", "secret", "token", "credential", "credentials", "apikey")
_QUALIFIED_KEYS = frozenset("api secret access private signing encryption master auth client license app session".split())
_NOT_SECRET_TOKENS = frozenset(
    "eos bos pad unk sep cls mask start end next page special max num cancel cancellation continuation sync "
    "pagination resume stop first last lexer parser image video audio vision".split()
)
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
# A secret noun, the rest of its name, an optional closing quote, and the assignment operator
# (`:=`, `=>`, `=`, `:` but not `::` or `==`); `--password value` is handled by `_flag`.
_KEYWORD = re.compile(r"(?i)(?:pass|pwd|secret|token|key|credential)[\w.-]*(?P<close>\\?[\"'])?(?P<sep>[ \t]*(?::=|=>|=(?!=)|:(?![:/]))[ \t]*|[ \t]+)")
_KEYWORD_LOWER = re.compile(_KEYWORD.pattern.removeprefix("(?i)"))
_VALUE = re.compile(r"""\\?"(?P<dq>[^"\\\n]*)\\?"|'(?P<sq>[^'\n]*)'|(?P<bare>[^\s"'`,;)}\]<>{\\][^\s"'`,;)}\]<>\\]*)""")
_WORDS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
_IDENTIFIER = re.compile(r"[A-Za-z_$][\w$]*")
_WORDS_ONLY = re.compile(r"[A-Za-z]+(?:[-_][A-Za-z]+)*")
# Member access (`this.x`, `!!r.withCredentials`, `settings.SECRET`), calls and indexing, operators.
_CODE = re.compile(r"[!~+-]*[A-Za-z_$][\w$]*(?:\??\.[A-Za-z_$][\w$]*)+.*|.*[(\[].*|.*(?:===|!==|\?\.|!!|=>|::|&&|\|\|).*")
# Env var names (`"AWS_SECRET_ACCESS_KEY"`), URLs (a password in one is url_password's), hex colours.
_NOT_A_SECRET = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+|[a-z][a-z0-9+.-]*://.*|#[0-9A-Fa-f]{3,8}")
_PATH = re.compile(r"(?:~|\.{1,2})?/.*|.*\.(?:pem|key|crt|p12|pfx|json|txt|env)")
_ANNOTATION_END = re.compile(r"[ \t]*=(?!=)")


def is_secret_name(name: str) -> bool:
    """`DB_PASSWORD`, `clientSecret`, `x-api-key`, `PGPASSWORD` yes; `token_count`, `eos_token`, `sort_key` no."""
    words = [word.lower() for word in _WORDS.findall(name)]
    if not words:
        return False
    last, previous = words[-1], words[-2] if len(words) > 1 else ""
    if last == "key":
        return previous in _QUALIFIED_KEYS
    if last in ("pwd", "pass"):
        return bool(previous)
    if last == "token" and previous in _NOT_SECRET_TOKENS:
        return False
    return last.endswith(_SECRET_NOUNS) or "_".join(words[-3:]) == "secret_key_base"


class EnvSecretRule(Rule):
    kind = "env_secret"
    needles = ("pass", "pwd", "secret", "token", "key", "credential")

    def spans(self, text: str, lowered: str) -> Iterator[Span]:
        # The case-sensitive scan of the lower-cased text is 7x faster than (?i); positions agree
        # whenever lowering kept every character one character long.
        matches = _KEYWORD_LOWER.finditer(lowered) if len(lowered) == len(text) else _KEYWORD.finditer(text)
        for match in matches:
            span = self._value_span(text, match)
            if span is not None:
                yield span

    @staticmethod
    def _value_span(text: str, match: re.Match[str]) -> Span | None:
        start = match.start()
        while start > 0 and text[start - 1] in _NAME_CHARS and match.start() - start < 80:
            start -= 1
        name_end = match.start("close") if match.group("close") else match.start("sep")
        name, close, sep = text[start:name_end], match.group("close"), match.group("sep")
        operator = sep.strip()
        if close and text[max(start - len(close), 0) : start] != close:
            return None
        before = text[start - 1] if start else ""
        if before and before in "${" or before and before in ":/" and operator == ":":
            return None  # ${DB_PASSWORD:?missing}, arn:aws:...:secret:name: references, not assignments
        if not operator and (close or not name.startswith("-")):
            return None  # without an operator, only a command-line flag assigns: `--password value`
        if name.startswith("."):
            return None  # `.secret-banner:hover`, `.token: ...`: a selector or a member, not a name
        name = name.lstrip("-.")
        value = _VALUE.match(text, match.end())
        if value is None or not is_secret_name(name) or _after_prose_word(text, start, name):
            return None
        group = next(group for group in ("dq", "sq", "bare") if value.group(group) is not None)
        # An UPPER_CASE name written `NAME=value` or `NAME: value` is an env or compose file, where a
        # plain word is the value; `NAME = value` with spaces is code, where it is a variable.
        env_file = name.isupper() and (sep == "=" or sep.startswith(":"))
        next_char = text[value.end() : value.end() + 1]
        if not _is_secret_value(value.group(group), name, quoted=group != "bare", env_file=env_file, next_char=next_char):
            return None
        if group == "bare" and operator == ":" and _ANNOTATION_END.match(text, value.end()):
            return None  # `NAME: Type = ...`
        return value.span(group)


def _after_prose_word(text: str, start: int, name: str) -> bool:
    """`next page token: ...`: a lone noun whose qualifier is the word before it, in prose."""
    if "_" in name or "-" in name or not name.isalpha():
        return False
    previous = re.search(r"([A-Za-z]+)[ \t]+$", text[max(start - 24, 0) : start])
    return previous is not None and not is_secret_name(f"{previous.group(1)}_{name}")


def _is_secret_value(value: str, name: str, quoted: bool, env_file: bool, next_char: str) -> bool:
    if len(value) < 4 or is_placeholder(value) or value.lower() == name.lower() or _NOT_A_SECRET.fullmatch(value):
        return False
    if any(char.isspace() for char in value):
        return False  # prose ("the ID token"), not a credential
    if not quoted and _PATH.fullmatch(value):
        return False  # the file that holds the secret
    if env_file:
        return True
    # A code-style name: a plain word is a variable, a type or an enum value, and an identifier
    # followed by `,` `;` `)` is an argument (`withCredentials: defaultToConfig2,`).
    if quoted:
        return not _WORDS_ONLY.fullmatch(value)
    identifier = _IDENTIFIER.fullmatch(value)
    return not (_CODE.fullmatch(value) or value.isdigit() or identifier and (next_char != "" and next_char in ",;)}" or not any(c.isdigit() for c in value)))


ENV_SECRET = EnvSecretRule()

URL_PASSWORD = PatternRule(
    "url_password",
    re.compile(r"(?i)\b[a-z][a-z0-9+.-]{1,30}://[^\s:/?#@\[\]\"'<>]*:(?P<password>[^\s/\"'<>]+)@(?=[\w\[.-])"),
    ("://",),
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
