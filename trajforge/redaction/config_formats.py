"""env_secret in formats that name a secret without an operator: netrc, XML elements, key/value attribute pairs.

- netrc (`~/.netrc`, `_netrc`): `machine api.heroku.com login ops@acme.io password <secret>`, on one line or many;
- XML elements (Maven's settings.xml, NuGet, Tomcat, Spring): `<password>secret</password>`, `<apiKey>...</apiKey>`;
- key/value attribute pairs (.NET appSettings): `<add key="ApiKey" value="secret" />`;
- SQL statements that set a password: `CREATE USER app WITH PASSWORD 'secret'`, `ALTER ROLE x ENCRYPTED PASSWORD '...'`,
  MySQL's `IDENTIFIED BY 'secret'` and `PASSWORD('secret')`, Oracle's bare `IDENTIFIED BY secret` (the string literal or
  word after the keyword; `PASSWORD '%s'`, `IDENTIFIED BY :pw` and other placeholders are kept).

The name must be a secret name (env_secrets.is_secret_name) and the value must hold a secret by the same tests
as an assignment's quoted value (env_secrets.holds_secret): `<password>${env.PW}</password>`,
`<token>changeme</token>` and `<password/>` are kept.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from trajforge.redaction.env_secrets import holds_secret, is_secret_name
from trajforge.redaction.rule import Rule, Span
from trajforge.redaction.values import is_placeholder

_NETRC = re.compile(r"\bmachine[ \t]+\S+(?:\s+(?:login|account)[ \t]+\S+)*\s+password[ \t]+(?P<value>\S+)")
_ELEMENT = re.compile(r"<(?P<name>[A-Za-z_][\w.:-]{0,60})>(?P<value>[^<>\s]{4,200})</(?P=name)>")
# After the statement's own words (`WITH`, `ENCRYPTED`, `LOGIN`, `USER name`, `ROLE name`), so that prose quoting a word
# after "password" (`Enter your password 'carefully'`) is left alone.
_SQL_PASSWORD = re.compile(r"""(?i)(?:\bpassword[ \t]*\([ \t]*|\b(?:with|encrypted|unencrypted|login|(?:user|role)[ \t]+\S+)[ \t]+password[ \t]+|\bidentified[ \t]+(?:with[ \t]+\w+[ \t]+)?by[ \t]+(?:password[ \t]+)?)"""
                           r"""(?:'(?P<quoted>[^'\n]{1,128})'|(?<=by )(?P<bare>(?!values\b)[A-Za-z_][\w$#]{0,127})(?=[ \t]*(?:;|$|\n)))""")
_SQL_STATEMENT = re.compile(r"(?i)\b(?:create|alter|grant)[ \t]")  # before IDENTIFIED BY on its line ("a library identified by 'name'" is prose)
_KEY_VALUE = re.compile(r"""\bkey[ \t]*=[ \t]*(?P<q>["'])(?P<name>[\w.:-]{1,80})(?P=q)[ \t]+value[ \t]*=[ \t]*(?P<q2>["'])(?P<value>[^"'\n]{4,200})(?P=q2)""")


class ConfigFormatSecretRule(Rule):
    kind = "env_secret"
    needles = ("password", "passwd", "secret", "token", "key", "credential", "pwd", "identified")

    def spans(self, text: str, lowered: str) -> Iterator[Span]:
        if "machine" in lowered:
            for match in _NETRC.finditer(text):
                if not is_placeholder(match.group("value")):
                    yield match.span("value")
        if "</" in text:
            for match in _ELEMENT.finditer(text):
                if self._secret(match):
                    yield match.span("value")
        if "password" in lowered or "identified" in lowered:
            for match in _SQL_PASSWORD.finditer(text):
                group = "quoted" if match.group("quoted") is not None else "bare"
                statement = text[match.start() : match.start() + 10].lower() != "identified" or _SQL_STATEMENT.search(
                    text, text.rfind("\n", 0, match.start()) + 1, match.start())
                if statement and not is_placeholder(match.group(group)):
                    yield match.span(group)
        if "value" in lowered:
            for match in _KEY_VALUE.finditer(text):
                if self._secret(match):
                    yield match.span("value")

    @staticmethod
    def _secret(match: re.Match[str]) -> bool:
        name = match.group("name").rsplit(":", 1)[-1]
        return is_secret_name(name) and holds_secret(match.group("value"), name, quoted=True, env_file=False, next_char="")
