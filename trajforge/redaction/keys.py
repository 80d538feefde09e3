"""Credentials with a fixed shape: provider-prefixed API keys, JWTs, PEM private keys, AWS secret keys.

A provider prefix (`ghp_`, `AKIA`, `sk-ant-`) makes a match nearly certain, so these rules run first and
win any overlap. Where a prefix is also an ordinary word start (`sk-`, `hf_`), `looks_random` asks for
a generated-looking body. Token shapes follow each provider's documented format, a little looser in
length so that rotated formats still match. A private key is taken whole (BEGIN to END), cut off after its BEGIN line
(truncated output), or from its base64 lines to its END line when the BEGIN line is in another text (another step).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from trajforge.redaction.rule import PatternRule, Rule, Span
from trajforge.redaction.values import looks_random

# Tokens end where the token alphabet ends; `\b` is not enough for alphabets that include `-`.
_END = r"(?![A-Za-z0-9_-])"


def _random_body(prefix_length: int, min_classes: int = 2):
    def accept(match: re.Match[str], text: str) -> bool:
        return looks_random(match.group()[prefix_length:], min_classes)

    return accept


def _openai(match: re.Match[str], text: str) -> bool:
    token = match.group()
    return not token.startswith("sk-ant-") and looks_random(token[3:], 3)


_PRIVATE_KEY_LABEL = r"-----{edge}[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----"
PRIVATE_KEY = PatternRule(
    "private_key",
    # The whole block; a block cut off by truncated tool output runs to the end of its base64 lines.
    re.compile(
        _PRIVATE_KEY_LABEL.format(edge="BEGIN")
        + r"(?:(?:(?!-----BEGIN).){0,20000}?"
        + _PRIVATE_KEY_LABEL.format(edge="END")
        + r"|(?:(?:\r?\n|\\r?\\n)(?:[A-Za-z0-9+/=]{16,}|[A-Za-z-]+: [^\n]*))+)",
        re.DOTALL,
    ),
    ("private key",),
    # A block needs a body: `("-----BEGIN RSA PRIVATE KEY-----", "-----END RSA PRIVATE KEY-----")` is code.
    accept=lambda match, text: re.search(r"[A-Za-z0-9+/]{16}", match.group().split("-----")[2]) is not None,
)

_PRIVATE_KEY_END = re.compile(_PRIVATE_KEY_LABEL.format(edge="END"))
_BASE64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_LINE_BREAKS = ("\\r\\n", "\\n", "\r\n", "\n")  # JSON-escaped ones too


class PrivateKeyTail(Rule):
    """The rest of a private key whose BEGIN line is in another text: a key read in two pieces (`head -n 15 key.pem`,
    then `tail -n +16 key.pem`) is two steps, and the second holds base64 lines and the END line only (or a diff's hunk
    of them, `+` marked). Its lines are found walking back from the END line (at most 20,000 characters); a line of 16
    or more characters must come first."""

    kind = "private_key"
    needles = ("private key",)

    def spans(self, text: str, lowered: str) -> Iterator[Span]:
        for match in _PRIVATE_KEY_END.finditer(text):
            label = match.start() - (match.start() > 0 and text[match.start() - 1] in "+- ")  # a diff's line marker
            start = _body_start(text, label)
            if start < label:
                yield start, match.end()


def _body_start(text: str, end: int) -> int:
    start, body = end, end
    while end - start < 20000:
        brk = next((brk for brk in _LINE_BREAKS if start >= len(brk) and text.startswith(brk, start - len(brk))), None)
        if brk is None:
            break
        line_end = start - len(brk)
        window = text[max(0, line_end - 4096) : line_end]
        line_start = line_end - (len(window) - len(window.rstrip(_BASE64)))
        if line_start > 0 and text[line_start - 1] == "\\":
            line_start += 1  # the `n` of an escaped break before the line
        if line_end - line_start < (1 if start == end else 16):  # the last line may be short, the others are full
            break
        start = line_start
        if line_end - line_start >= 16:
            body = line_start
    return body


PROVIDER_KEYS = (
    PatternRule("aws_access_key", re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"), ("akia", "asia"), accept=_random_body(4)),
    PatternRule("github_token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{22,244})\b"),
                ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"), accept=_random_body(4)),
    PatternRule("gitlab_token", re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}" + _END), ("glpat-",), accept=_random_body(6)),
    PatternRule("anthropic_key", re.compile(r"\bsk-ant-[A-Za-z0-9_-]{20,}" + _END), ("sk-ant-",), accept=_random_body(7)),
    PatternRule("openai_key", re.compile(r"\bsk-(?:[a-z]+-)?[A-Za-z0-9_-]{20,}" + _END), ("sk-",), accept=_openai),
    # Slack tokens, and the secret path of an incoming-webhook URL (the host stays).
    PatternRule("slack_token", re.compile(r"\b(?:xox[abeoprs]-|xapp-\d-)[A-Za-z0-9-]{10,}" + _END + r"|(?<=hooks\.slack\.com/services/)T[A-Z0-9]+/B[A-Z0-9]+/[A-Za-z0-9]{16,}"),
                ("xox", "xapp-", "hooks.slack.com"), accept=_random_body(5)),
    PatternRule("stripe_key", re.compile(r"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,247}\b"), ("_live_", "_test_"), accept=_random_body(8)),
    PatternRule("sendgrid_key", re.compile(r"\bSG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}" + _END), ("sg.",), accept=_random_body(3)),
    PatternRule("google_api_key", re.compile(r"\bAIza[A-Za-z0-9_-]{35}" + _END), ("aiza",)),
    PatternRule("npm_token", re.compile(r"\bnpm_[A-Za-z0-9]{36}\b"), ("npm_",), accept=_random_body(4)),
    PatternRule("huggingface_token", re.compile(r"\bhf_[A-Za-z0-9]{30,40}\b"), ("hf_",), accept=_random_body(3)),
    PatternRule("jwt", re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*" + _END), ("eyj",)),
    # The provenance API's own bearer tokens (seed 003, STEREOS: `sk_` + 43 URL-safe base64 characters), bare in a
    # tool's output (`echo $TRAJFORGE_TOKEN`); Stripe's `sk_live_...` overlap them and win as stripe_key.
    PatternRule("bearer_token", re.compile(r"\bsk_[A-Za-z0-9_-]{43}" + _END), ("sk_",), accept=_random_body(3)),
)

AWS_SECRET_KEY = PatternRule(
    "aws_secret_key",
    # 40 base64 characters are everywhere (SHA-1s are 40 hex), so only in an AWS-named context or
    # right after an access key id (the credentials CSV the console hands out: `AKIA...,<secret>`). The name
    # may be words, as `aws configure` prompts for it (`AWS Secret Access Key [****************KX7]: <secret>`).
    re.compile(r"(?i)(?:(?:aws[_ ]?secret[_ ]?(?:access[_ ]?)?key|secret[_ ]?access[_ ]?key)(?:[ \t]*\[[^\]\n]{0,40}\])?"
               r"[\"']?(?:\s*(?::=|=>|=|:)\s*|[ \t]+)[\"']?"
               r"|(?-i:\b(?:AKIA|ASIA)[A-Z0-9]{16})[\"']?[ \t]*[,;|:=][ \t]*[\"']?)"
               r"(?P<value>(?-i:[A-Za-z0-9/+]{40}))(?![A-Za-z0-9/+=])"),
    ("secret", "akia", "asia"),
    group="value",
    accept=lambda match, text: looks_random(match.group("value")),
)
