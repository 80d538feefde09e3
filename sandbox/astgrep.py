"""ast-grep command lines for actions, a host-side rule check with ast-grep-py, and the matches' count.

Decisions, each from a trap found on this machine:
- The CLI runs with its working directory in the per-run `/action` mount, outside the snapshot, so
  an `sgconfig.yml` planted in the snapshot (which could load native "custom languages") is never read.
- Every file of the snapshot is considered, hidden and git-ignored ones included
  (`--no-ignore hidden/dot/vcs/...`): a snapshot is exactly the files the task gave
  (`include_hidden_and_ignored: false` restores ast-grep's defaults).
- One action is two CLI passes in the same jail: `--json=compact` to list matches (ast-grep cannot
  print JSON and update at once), then `-U` to apply. One `-U` pass rewrites only the outermost
  of nested matches; `matches` counts them all.
- `ast-grep-py` is used only to reject malformed YAML rules before starting a jail (and to say where an
  inline pattern the CLI warned about has its syntax error). It never sees an
  unknown language (it panics with a BaseException; languages are checked first) and its `fix` is
  never used (it does not expand metavariables): the CLI applies every rewrite.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from sandbox.models import Action, InvalidAction, RewriteAction, RuleAction
from sandbox.settings import SandboxSettings
from sandbox.workspace import read_file

NO_IGNORE = ("hidden", "dot", "exclude", "global", "parent", "vcs")
MATCHES_FILE = "matches.json"
RULE_FILE = "rule.yml"

# $1: the matches file; then the action's own arguments; "--" and the paths last.
REWRITE_SCRIPT = """\
out=$1; pattern=$2; rewrite=$3; shift 3
"$AG" run --pattern "$pattern" --rewrite "$rewrite" $OPTS --json=compact "$@" > "$out"; code=$?
[ $code -le 1 ] || exit $code
"$AG" run --pattern "$pattern" --rewrite "$rewrite" $OPTS -U "$@"; code=$?
[ $code -le 1 ] || exit $code
exit 0
"""
RULE_SCRIPT = """\
out=$1; rule=$2; shift 2
"$AG" scan --rule "$rule" $OPTS --json=compact "$@" > "$out"; code=$?
[ $code -le 1 ] || exit $code
"$AG" scan --rule "$rule" $OPTS -U "$@"; code=$?
[ $code -le 1 ] || exit $code
exit 0
"""


def cli_binary() -> str:
    """The ast-grep CLI the ast-grep-cli wheel installs beside this Python, else one on PATH."""
    for candidate in (Path(sys.prefix) / "bin" / "ast-grep", shutil.which("ast-grep")):
        if candidate and os.access(candidate, os.X_OK):
            return str(candidate)
    raise InvalidAction("the ast-grep CLI is not installed: `make venv` installs ast-grep-cli")


def check_rule(action: RuleAction) -> None:
    """Reject a YAML rule ast-grep cannot compile, with its message, before any jail starts."""
    from ast_grep_py import SgRoot

    config = {key: value for key in ("rule", "constraints", "transform", "utils") if (value := getattr(action, key)) is not None}
    try:
        SgRoot("", action.language).root().find_all(config)
    except Exception as exc:  # the binding raises a plain Exception naming the bad field
        raise InvalidAction(f"rule {action.id!r} does not compile: {exc}") from None


# The character ast-grep puts in place of `$` before parsing a pattern, where `$` cannot start an identifier
# (ast-grep's own `expando_char`); the languages here are those whose character we know, `$` itself in the others.
_EXPANDO = {"python": "µ", "javascript": "$", "typescript": "$", "tsx": "$", "java": "$"}
CLI_PATTERN_ERROR = "Pattern contains an ERROR node"
"""What the CLI warns on stderr when an inline pattern does not parse (and it matched nothing)."""


def pattern_error(action: Action, stderr: str) -> str | None:
    """Why an inline pattern that matched nothing is invalid: the CLI's own verdict (its warning on `stderr`), so that
    it agrees with the CLI (the binding alone also flags patterns the CLI takes, such as Java's `if ($C) { $$$ }`);
    the binding only says where the syntax error is, when it finds it. None when the CLI did not warn."""
    from ast_grep_py import SgRoot

    if not isinstance(action, RewriteAction) or CLI_PATTERN_ERROR not in stderr:
        return None
    why = f"the pattern does not parse as {action.language} (ast-grep: {CLI_PATTERN_ERROR})"
    if action.language in _EXPANDO:
        errors = SgRoot(action.pattern.replace("$", _EXPANDO[action.language]), action.language).root().find_all(kind="ERROR")
        if errors:
            where = errors[0].range().start
            why = f"the pattern does not parse as {action.language} (a syntax error at line {where.line + 1}, column {where.column + 1})"
    return why


def command(action: Action, settings: SandboxSettings, action_dir: Path, out_dir: Path) -> list[str]:
    """The jailed command for `action`; writes the rule file into `action_dir` (mounted read-only at /action)."""
    options = [f"--lang={action.language}"] if action.type == "rewrite" else []
    if action.type == "rewrite" and action.strictness:
        options.append(f"--strictness={action.strictness}")
    if settings.include_hidden_and_ignored:
        options += [f"--no-ignore={kind}" for kind in NO_IGNORE]
    paths = [f"/workspace/{path}" for path in action.paths] if action.paths else ["/workspace"]
    preamble = f'AG="{cli_binary()}"; OPTS="{" ".join(options)}"\n'
    out = f"/out/{MATCHES_FILE}"
    if action.type == "rewrite":
        return ["/bin/sh", "-c", preamble + REWRITE_SCRIPT, "sh", out, action.pattern, action.rewrite, *paths]
    (action_dir / RULE_FILE).write_text(action.to_yaml(), encoding="utf-8")
    return ["/bin/sh", "-c", preamble + RULE_SCRIPT, "sh", out, f"/action/{RULE_FILE}", *paths]


def count_matches(out_dir: Path, max_bytes: int) -> int:
    """Matches listed by the JSON pass (0 when it wrote nothing parseable)."""
    try:
        matches = json.loads(read_file(out_dir / MATCHES_FILE, max_bytes) or b"[]")
    except (OSError, ValueError):
        return 0
    return len(matches) if isinstance(matches, list) else 0
