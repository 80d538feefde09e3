"""Is a value a real secret, or a stand-in for one? Shared by the key, auth and env_secret rules.

Documentation, config templates and code are full of secret-shaped holes: `<your-token>`, `${DB_PASSWORD}`,
`changeme`, `xxxxxxxx`, `sk-...`. They are public, carry no secret, and keeping them keeps training text
realistic, so they are not redacted. `looks_random` is the test that a provider-prefixed token is a
generated credential rather than a word that happens to start with the prefix (`sk-button-primary`).
"""

from __future__ import annotations

import re

PLACEHOLDER_WORDS = frozenset(
    """none null nil true false undefined empty unset default required optional todo tbd n/a na
    changeme change_me change-me changeit password passwd pass pwd secret token apikey api_key key
    example dummy fake test testing sample redacted hidden masked placeholder secret_value
    str string bytes int bool any secretstr value x-oauth-basic""".split()
)
_PLACEHOLDER = re.compile(
    r"""(?ix)^(?:
        \$.* | %\(?\w*\)?[sd] | %\w+%     # $VAR, ${VAR}, $(cmd); %(name)s, %s; %PASSWORD%
      | ![A-Za-z]+\b.*                  # YAML tags: !Ref, !vault
      | \{.*\} | \{\{.* | \#\{.*        # {password}, {{ .Values.x }}, #{var}
      | <.*> | \[.*\] | \(.*\)          # <your-token>, [hidden], (none)
      | [*x•.#_-]{3,}                   # ******, xxxxxxxx, ..., ---
      | (?:.*[-_ ])?(?:your|my|insert|put|enter)[-_ ].*   # your_token_here, xoxb-your-token
      | (?:your|my|the)[-_]?(?:password|passwd|pass|secret|token|key|api[-_]?key)   # mypassword
      | (?:pass(?:word)?|passwd|secret|token|test|example|changeme|dummy|fake|sample)[-_]?\d{0,4}   # password1, token123
      | .*[-_ ](?:here|placeholder|example)
      | .*\.\.\.                        # sk-...  (an ellipsis: elided in the text already)
      | .*\*{3}.*                       # hf_***, pass***word: masked already
    )$"""
)


def is_placeholder(value: str) -> bool:
    """True for values that stand in for a secret (see the module docstring); case-insensitive."""
    value = value.strip().strip("\"'")
    return len(value) < 3 or value.lower() in PLACEHOLDER_WORDS or bool(_PLACEHOLDER.match(value))


def looks_random(token: str, min_classes: int = 2) -> bool:
    """A generated token: at least `min_classes` of (digits, upper, lower), varied characters, no long runs."""
    classes = any(c.isdigit() for c in token) + any(c.isupper() for c in token) + any(c.islower() for c in token)
    if classes < min_classes or len(set(token)) < min(10, len(token) // 2):
        return False
    return not re.search(r"(.)\1{5}", token)
