"""env_secret: the value of a secret-named assignment (`DB_PASSWORD=...`, `"api_key": "..."`, `--token x`).

Only the value is replaced, so `DB_PASSWORD=[REDACTED:ENV_SECRET]` still teaches what the line does.

The name must end in a secret noun (`..._PASSWORD`, `..._TOKEN`, `client_secret`, `x-api-key`,
`PGPASSWORD`), so `token_count`, `max_tokens`, `sort_key`, `password_hash` and the tokenizer's
`eos_token` are left alone. This is the rule most at risk of eating code, so a value is refused when
it reads a secret rather than holds one:

- no assignment: `os.environ["API_TOKEN"]`, `get_password("db")`, `${DB_PASSWORD:?missing}`;
- code: `getpass()`, `os.getenv("T")`, `settings.SECRET_KEY`, `!!r.withCredentials`, `a === b`;
- types and annotations: `token: str`, `token: Optional[str] = None`, `SECRET_KEY: Final = ...`;
- variables: a code-style name given a plain word (`password=password`, `password: hunter`), a
  snake_case identifier (`secret_key = s3_connection`), or an identifier passed on (`token: tok2,`);
- placeholders (`values.is_placeholder`), env var names (`"GOOGLE_APPLICATION_CREDENTIALS"`), URLs
  (url_password's business), paths to the secret (`~/.ssh/id_ed25519`), prose (`"the ID token"`),
  tokenizer specials (`"<|image|>"`), numbers in code (`"secret": 3595` in a vocabulary).

An UPPER_CASE, unquoted name written `NAME=value` or `NAME: value` (an env, properties or compose
file) is the exception: there a plain word is the value (`POSTGRES_PASSWORD=postgres`). Known misses:
a code-style name given a plain word without digits (`password: hunter`), values that
continue on the next line. netrc files, XML elements and key/value attribute pairs are config_formats.py's.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from trajforge.redaction.rule import Rule, Span
from trajforge.redaction.values import PASSWORD_NOUNS, is_passphrase, is_placeholder, looks_random

_SECRET_NOUNS = ("password", "passwd", "passphrase", "secret", "token", "credential", "credentials", "apikey")
_QUALIFIED_KEYS = frozenset("api secret access account private signing encryption master auth client license app session".split())
_NOT_SECRET_TOKENS = frozenset(
    "eos bos pad unk sep cls mask start end next page special max num cancel cancellation continuation sync "
    "pagination resume stop first last lexer parser image video audio vision prefix suffix middle eot fill".split()
)
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
_WORDS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")

# A secret noun, the rest of its name, an optional closing quote, and the operator (`:=`, `=>`, `=`,
# `:` but not `::`, `==` or `://`) or, for `--flag value`, blanks. Scanned in the lower-cased text.
_KEYWORD = re.compile(r"(?:pass|pwd|secret|token|key|credential)[\w.-]*(?P<close>\\?[\"'])?(?P<sep>[ \t]*(?::=|=>|=(?!=)|:(?![:/]))[ \t]*|[ \t]+)")
_VALUE = re.compile(r"""\\?"(?P<dq>[^"\\\n]*)\\?"|'(?P<sq>[^'\n]*)'|(?P<bare>[^\s"'`,;)}\]<>{\\][^\s"'`,;)}\]<>\\]*)""")
_NEXT_FIELD = re.compile(r"&[\w.-]+=")
_PROSE_WORD_BEFORE = re.compile(r"([A-Za-z]+)[ \t]+$")

_IDENTIFIER = re.compile(r"[A-Za-z_$][\w$]*")
_WORDS_ONLY = re.compile(r"_*[^\W\d_]+(?:[-_.]+[^\W\d_]+)*_*")  # any alphabet: `"password": "Contraseña"` is a label
_MEMBER = re.compile(r"[!~+-]*[A-Za-z_$][\w$]*(?:\??\.[A-Za-z_$][\w$]*)+.*")
_CALL_OR_OPERATOR = re.compile(r".*[(\[].*|.*(?:===|!==|\?\.|!!|=>|::|&&|\|\|).*")
_NOT_A_SECRET = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+|[a-z][a-z0-9+.-]*://.*|#[0-9A-Fa-f]{3,8}|.*<[^>]*>.*|\|\w+\|")
_PATH = re.compile(r"(?:~|\.{1,2})?/.*|.*\.(?:pem|key|crt|p12|pfx|json|txt|env)")
_ANNOTATION_END = re.compile(r"[ \t]*=(?!=)")
_HYPHENATED = re.compile(r"[a-z]+(?:-[a-z]+){2,}")


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
        # Scanning the lower-cased text case-sensitively is 7x faster than (?i) on the original; the
        # positions agree whenever lowering kept every character one character long.
        if len(lowered) != len(text):
            lowered = "".join(char if len(char.lower()) != 1 else char.lower() for char in text)
        for match in _KEYWORD.finditer(lowered):
            span = _value_span(text, match)
            if span is not None:
                yield span


def _value_span(text: str, match: re.Match[str]) -> Span | None:
    start = match.start()
    while start > 0 and text[start - 1] in _NAME_CHARS and match.start() - start < 80:
        start -= 1
    name_end = match.start("close") if match.group("close") else match.start("sep")
    name, close, sep = text[start:name_end], match.group("close"), match.group("sep")
    operator, before = sep.strip(), text[start - 1] if start else ""
    if close and text[max(start - len(close), 0) : start] != close:
        return None
    if before and before in "${" or before and before in ":/" and operator == ":":
        return None  # ${DB_PASSWORD:?missing}, arn:aws:...:secret:name: references, not assignments
    if not operator and (close or not name.startswith("-")) or name.startswith("."):
        return None  # only a command-line flag assigns without an operator; `.token-x:` is a selector
    name = name.lstrip("-")
    value = _VALUE.match(text, match.end())
    # `Server=db;User ID=sa;Password=...;`: a connection string's value is data, and ODBC's bare `PWD` names a password
    connection = sep == "=" and text[:start].rstrip(" \t")[-1:] == ";"
    secret_name = is_secret_name(name) or connection and name.lower() in ("pwd", "pass")
    if value is None or not secret_name or _qualified_by_prose(text, start, name):
        return None
    group = next(group for group in ("dq", "sq", "bare") if value.group(group) is not None)
    content, end = value.group(group), value.end(group)
    next_field = _NEXT_FIELD.search(content)
    if next_field:  # a query string or form body: `password=...&client_id=...`
        content = content[: next_field.start()]
        end = value.start(group) + len(content)
    if not operator and content.startswith("-"):
        return None  # `--current-token --cut-at-cursor`: the next flag, not a value
    next_char = text[end : end + 1]
    env_file = connection or not close and name.isupper() and (sep == "=" or sep.startswith(":")) and next_char not in tuple(",)}]")
    if group == "bare" and (operator == ":" and _ANNOTATION_END.match(text, end) or _CALL_OR_OPERATOR.fullmatch(content)):
        return None  # `NAME: Type = ...`, calls, indexing, operators
    if not holds_secret(content, name, quoted=group != "bare", env_file=env_file, next_char=next_char):
        return None
    return value.start(group), end


def is_secret_field(name: str, value: str) -> bool:
    """A structured field's value as the rule judges the same field written as JSON text (`"name": "value"`): a tool's
    `{"env": {"DB_PASSWORD": "..."}}` arguments hold the secret as a value and its name as the key, which a scan
    of the value alone cannot see. A value of several lines is a document, not a field's secret; a key that names
    something else (`AWS::IAM::AccessKey`, `${TOKEN}`, `.token-x`) is a reference, as in the text."""
    start = len(name)
    while start > 0 and name[start - 1] in _NAME_CHARS:
        start -= 1
    if "\n" in value or name[start - 1 : start] in tuple("${:/") or name[start:].startswith("."):
        return False
    name = name[start:].lstrip("-")
    return is_secret_name(name) and holds_secret(value, name, quoted=True, env_file=False, next_char='"')


def _qualified_by_prose(text: str, start: int, name: str) -> bool:
    """`next page token: ...`: a lone noun whose qualifier is the word before it, in prose."""
    if not name.isalpha():
        return False
    previous = _PROSE_WORD_BEFORE.search(text, max(start - 24, 0), start)
    return previous is not None and not is_secret_name(f"{previous.group(1)}_{name}")


def holds_secret(value: str, name: str, quoted: bool, env_file: bool, next_char: str) -> bool:
    if len(value) < 4 or is_placeholder(value.rstrip(":,")) or value.lower() == name.lower() or _NOT_A_SECRET.fullmatch(value):
        return False
    if any(char.isspace() for char in value):
        # prose, unless a quoted passphrase of a password-named field: `password = "correct horse battery"`
        return quoted and _WORDS.findall(name)[-1].lower() in PASSWORD_NOUNS and is_passphrase(value)
    if _PATH.fullmatch(value) and not (quoted and looks_random(value)):
        return False  # the file that holds the secret (quoted too: `"private_key": "./certs/server.key"`), not a base64 secret's `/`
    if env_file:
        return True
    if value.isdigit() or _WORDS_ONLY.fullmatch(value):
        # a plain word is a variable or a name, but three hyphenated words may be a passphrase (correct-horse-battery)
        return quoted and _WORDS.findall(name)[-1].lower() in PASSWORD_NOUNS and _HYPHENATED.fullmatch(value) is not None \
            and is_passphrase(value.replace("-", " "))
    if quoted:
        return True
    if _MEMBER.fullmatch(value):
        return False
    identifier = _IDENTIFIER.fullmatch(value) is not None
    return not (identifier and ("_" in value or next_char in tuple(",;}")))
