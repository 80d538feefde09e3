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
      | (?:.*[-_ ])?(?:your|insert|put|enter)[-_ ].*   # your_token_here, xoxb-your-token
      | (?:.*[-_ ])?my[-_]?(?:[a-z0-9]+[-_])*(?:password|passwd|pass|secret|token|key|api[-_]?key)(?:[-_].*)?   # my-db-password, xoxb-my-token
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


PASSWORD_NOUNS = frozenset("password passwd passphrase pwd pass".split())
# Words that make a multi-word value prose, a UI label or a translation rather than a passphrase.
_PROSE_WORDS = frozenset(
    """a an the is are was be been not no must should can cannot can't could will would may of to for in on at by with
    from and or but if this that these those it its your you please enter confirm type new old current invalid incorrect
    as so than then before after same all any some each every very more most less only also just here there what which
    who when where why how do does did done has have had use used using see
    wrong required missing empty field fields least characters character long short too match matches reset forgot
    forgotten change expired password passwords passwd passphrase passwort kennwort contraseña senha wachtwoord
    mot de passe la le du der die das el lo""".split()
)


def is_passphrase(value: str) -> bool:
    """A quoted multi-word value of a password-named field that reads as a passphrase (`correct horse battery`,
    `my pass`), not as prose, a label or a translation (`This field is required.`, `Invalid password`, `Mot de passe`)."""
    words = value.split()
    if not 2 <= len(words) <= 6 or len(value) > 64 or value.rstrip()[-1:] in tuple(".?:…"):
        return False
    return not any(word.lower().strip(",;") in _PROSE_WORDS for word in words) and not is_placeholder(value)
