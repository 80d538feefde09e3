"""cli_password: a password given as a command-line argument (`mysql -u root -pS3cret`, `sshpass -p x ssh ...`).

`--password=X` and `--password X` are env_secret's (a secret-named flag); this rule knows the short flags
that only mean a password for the tool they follow, so `ps -p 1234`, `pytest -p no:cacheprovider` or
`tar -C dir` are never read as one. Only the password is replaced; the command, user and host stay.

- MySQL and MariaDB clients (`mysql`, `mysqldump`, `mysqladmin`, `mariadb`, ...): `-pSECRET`, glued, as
  the client reads it; a lone `-p` (the client prompts) or `-p mydb` has none. `-P3306` is the port.
- `sshpass -p SECRET`, `redis-cli -a SECRET` / `--pass SECRET`, `sqlcmd -P SECRET`, `mongo`/`mongosh -p SECRET`,
  `ldapsearch`/`ldapmodify`/... `-w SECRET`, `docker`/`podman`/`helm registry`/`az`/... `login -p SECRET`,
  `twine upload -p SECRET`, openssl's `-passin pass:SECRET` / `-passout pass:SECRET`;
- a password piped to `sudo -S` (`echo 'SECRET' | sudo -S apt install ...`), and `htpasswd -b file user SECRET`.

The flag must follow the command within the same command (no `|`, `;`, `&&` or newline between).
Placeholders (`-p$MYSQL_PWD`, `-p"${PASSWORD}"`, `-p<password>`) are kept.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from trajforge.redaction.rule import Rule, Span
from trajforge.redaction.values import is_placeholder

_SAME_COMMAND = r"\b[^\n|;&]{0,300}?(?<=\s)"
_ARGUMENT = r"""(?:'(?P<sq>[^'\n]+)'|"(?P<dq>[^"\n]+)"|(?P<bare>[^\s'"|;&]+))"""
_MYSQL = r"(?:mysql(?:dump|admin|import|show|check|pump|sh)?|mariadb(?:-dump|-admin|dump|admin)?)"
_LOGIN = r"(?:docker|podman|buildah|skopeo|nerdctl|oras|helm[ \t]+registry|az)[ \t]+login"

# (needles, pattern): a pattern runs only where its command's name occurs in the lower-cased text.
_PATTERNS = (
    # glued only: `-p db` prompts for the password; the command position is checked apart (_COMMAND_BEFORE)
    (("mysql", "mariadb"), re.compile(rf"{_MYSQL}{_SAME_COMMAND}-p{_ARGUMENT}")),
    (("sshpass",), re.compile(rf"sshpass{_SAME_COMMAND}-p[ \t]*{_ARGUMENT}")),
    (("redis-cli",), re.compile(rf"redis-cli{_SAME_COMMAND}(?:-a|--pass)[ \t]+{_ARGUMENT}")),
    (("sqlcmd",), re.compile(rf"sqlcmd{_SAME_COMMAND}-P[ \t]*{_ARGUMENT}")),
    (("mongo",), re.compile(rf"mongo(?:sh)?{_SAME_COMMAND}-p[ \t]+{_ARGUMENT}")),
    (("ldap",), re.compile(rf"ldap(?:search|modify|add|delete|passwd|whoami|compare|modrdn){_SAME_COMMAND}-w[ \t]+{_ARGUMENT}")),
    ((" login",), re.compile(rf"{_LOGIN}{_SAME_COMMAND}-p[ \t]+{_ARGUMENT}")),
    (("twine",), re.compile(rf"twine{_SAME_COMMAND}-p[ \t]+{_ARGUMENT}")),
    (("openssl",), re.compile(rf"openssl{_SAME_COMMAND}-pass(?:in|out)?[ \t]+pass:{_ARGUMENT}")),
    (("sudo",), re.compile(rf"echo[ \t]+(?:-[ne]+[ \t]+)?{_ARGUMENT}[ \t]*\|[ \t]*sudo\b[^\n|;&]*?[ \t]-[A-Za-z]*S\b")),
    (("htpasswd",), re.compile(rf"htpasswd{_SAME_COMMAND}-[A-Za-z]*b[A-Za-z]*[ \t]+(?:-[A-Za-z]+[ \t]+)*[^\s-][^\s]*[ \t]+[^\s]+[ \t]+{_ARGUMENT}")),
)
_COMMAND_NAMES = re.compile("|".join(re.escape(needle) for needles, _ in _PATTERNS for needle in needles))
# A command, not part of a word or a path: `gcc -I/usr/include/mysql -pthread` has no password, `/usr/bin/mysql -px` has.
_COMMAND_BEFORE = re.compile(r"(?:^|[\s(`'\"=;|&])(?:[\w./-]*bin/)?$")


class CliPasswordRule(Rule):
    kind = "cli_password"
    needles = ("-p", " -a", " -w", "sudo", "htpasswd")  # every flag above (-p, -P, --pass, -passin, -a, -w), and two commands

    def spans(self, text: str, lowered: str) -> Iterator[Span]:
        commands = set(_COMMAND_NAMES.findall(lowered))
        for needles, pattern in _PATTERNS:
            if commands.isdisjoint(needles):
                continue
            for match in pattern.finditer(text):
                if not _COMMAND_BEFORE.search(text, max(match.start() - 40, 0), match.start()):
                    continue
                group = next(name for name in ("sq", "dq", "bare") if match.group(name) is not None)
                if not is_placeholder(match.group(group)) and not match.group(group).startswith("-"):
                    yield match.span(group)
