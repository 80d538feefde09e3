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
- The CLI skips, silently, files it will not parse (over its size limit, or not UTF-8) and still exits 0: the JSON
  pass runs with `--inspect=entity`, whose lines go to a file of /out (the rest of its stderr to the run's stderr),
  and the result's `skipped_files` names each such file with ast-grep's reason (`fileTooLarge`, `invalidUtf8`).
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
INSPECT_FILE = "inspect.txt"
RULE_FILE = "rule.yml"

# The JSON pass's stderr but ast-grep's `--inspect` lines (kept in $log) goes to the run's stderr.
_RELAY = """while IFS= read -r line || [ -n "$line" ]; do case $line in "sg: "*) ;; *) printf '%s\\n' "$line" >&2;; esac; done < "$log"
"""
# $1: the matches file, $2 the inspect file; then the action's own arguments and the paths last.
REWRITE_SCRIPT = """\
out=$1; log=$2; pattern=$3; rewrite=$4; shift 4
"$AG" run --pattern "$pattern" --rewrite "$rewrite" $OPTS --json=compact --inspect=entity "$@" > "$out" 2> "$log"; code=$?
""" + _RELAY + """\
[ $code -le 1 ] || exit $code
"$AG" run --pattern "$pattern" --rewrite "$rewrite" $OPTS -U "$@"; code=$?
[ $code -le 1 ] || exit $code
exit 0
"""
RULE_SCRIPT = """\
out=$1; log=$2; rule=$3; shift 3
"$AG" scan --rule "$rule" $OPTS --json=compact --inspect=entity "$@" > "$out" 2> "$log"; code=$?
""" + _RELAY + """\
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
        why = str(exc).split("\n\nStack backtrace:")[0].strip()  # the binding appends its Rust backtrace
        raise InvalidAction(f"rule {action.id!r} does not compile: {why}") from None


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
    out, log = f"/out/{MATCHES_FILE}", f"/out/{INSPECT_FILE}"
    if action.type == "rewrite":
        return ["/bin/sh", "-c", preamble + REWRITE_SCRIPT, "sh", out, log, action.pattern, action.rewrite, *paths]
    (action_dir / RULE_FILE).write_text(action.to_yaml(), encoding="utf-8")
    return ["/bin/sh", "-c", preamble + RULE_SCRIPT, "sh", out, log, f"/action/{RULE_FILE}", *paths]


def count_matches(out_dir: Path, max_bytes: int) -> int:
    """Matches listed by the JSON pass (0 when it wrote nothing parseable)."""
    try:
        matches = json.loads(read_file(out_dir / MATCHES_FILE, max_bytes) or b"[]")
    except (OSError, ValueError):
        return 0
    return len(matches) if isinstance(matches, list) else 0


def skipped_files(out_dir: Path, workspace: Path, max_bytes: int) -> dict[str, str]:
    """{workspace-relative path: ast-grep's reason} for each file the JSON pass skipped (`--inspect=entity`'s
    `sg: entity|file|PATH: skipped=REASON` lines); the path is /workspace/... in a jail, the workspace's absolute path
    (as `Sandbox` resolves it) without one."""
    try:
        text = read_file(out_dir / INSPECT_FILE, max_bytes).decode("utf-8", "replace")
    except OSError:
        return {}
    prefixes = ("/workspace/", f"{workspace}/")
    skipped = {}
    for line in text.splitlines():
        entry, _, reason = line.removeprefix("sg: entity|file|").rpartition(": skipped=")
        if not line.startswith("sg: entity|file|") or not entry:
            continue
        for prefix in prefixes:
            if entry.startswith(prefix):
                entry = entry[len(prefix):]
                break
        skipped[entry] = reason.strip()
    return dict(sorted(skipped.items()))
