"""`trajforge sandbox apply`: one ast-grep action (and optionally tests) in the jail, printed as JSON."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from trajforge.cli.common import add_examples, common_arguments

EPILOG = """\
ACTION.json holds an inline rewrite or an ast-grep YAML rule, e.g.
  {"pattern": "print($A)", "rewrite": "logger.info($A)", "language": "python"}
  {"id": "no-console", "language": "javascript", "rule": {"pattern": "console.log($$$ARGS)"}, "fix": "logger.info($$$ARGS)"}
The workspace directory is copied into a fresh jailed workspace and left untouched; the result's
"diff" applies to it with `git apply` (unless "diff_truncated": it keeps sandbox.diff_cap_bytes).
--tests runs a command whose program is on sandbox.allowed_test_programs (python, pytest, node, java,
...; no shell), or with 'auto' the framework's default; their counts are in the output's "tests".
Exit status: 0 when the action ran (matched or not), whatever its tests gave (a failing or empty test
run is said on stderr; --require-tests-pass makes it 1); 1 when the action, the workspace or the test
command is invalid (the message says which); 2 when the jail cannot start.
Jail policy: configs/sandbox.yaml (--set sandbox.wall_time_s=10, --set sandbox.jail=none, ...)."""


EXAMPLES = """\
  trajforge sandbox apply --workspace ./myproject --action action.json --tests "python -m pytest -q"
  trajforge sandbox apply --workspace ./myproject --action '{"pattern": "print($A)", "rewrite": "log($A)", "language": "python"}'
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    add_examples(parser, EXAMPLES)
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    apply = verbs.add_parser("apply", help="apply an action to a copy of a directory and print the SandboxResult",
                             description=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    apply.add_argument("--workspace", required=True, type=Path, help="directory with the code to rewrite (copied, never modified)")
    apply.add_argument("--action", required=True, help="ACTION.json (or YAML), '-' for stdin, or the JSON itself")
    apply.add_argument("--tests", metavar="CMD", help="after the action, run this test command in the jail (e.g. 'python -m pytest -q'; its "
                       "program must be on sandbox.allowed_test_programs); 'auto' runs the framework's default")
    apply.add_argument("--require-tests-pass", action="store_true",
                       help="exit 1 when the tests fail or none ran (default: 0 whenever the action ran; the counts are in the output)")
    apply.add_argument("--task-id", default="cli", help="task id for the workspace name and logs/sandbox/<task_id>.jsonl (default cli)")
    apply.add_argument("--keep", action="store_true", help="keep the jailed workspace and print its path on stderr")
    apply.add_argument("--config", type=Path, help="sandbox config (default configs/sandbox.yaml)")
    common_arguments(apply, nested=True, command="sandbox")


def config_roots(args: argparse.Namespace) -> tuple[str, ...]:
    return ("sandbox",)


def _read_action(text: str) -> str:
    if text == "-":
        return sys.stdin.read()
    if text.lstrip().startswith("{"):
        return text
    path = Path(text)
    if not path.is_file():
        raise SystemExit(f"trajforge sandbox: --action {text!r} is not a file: give ACTION.json (or .yaml), '-' to read stdin, "
                         f"or the JSON itself (starting with '{{')")
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SystemExit(f"trajforge sandbox: --action {text!r} cannot be read as text ({exc}): give ACTION.json (or .yaml)") from None


def _copy_inside_itself(workspace: Path, workspaces_root: Path) -> str | None:
    """Why the jailed copy of `workspace` cannot be made, where sandbox.workspaces_root (`.sandbox`, relative to the folder
    the command runs in) is inside it (`--workspace .` run in the project): the copy would be made inside what it copies,
    and copy itself until the path was too long (a kilobyte of `.sandbox/cli--.../` in the error), leaving `.sandbox/` in
    the project. None when the two are apart."""
    folder, root = workspace.expanduser().resolve(), workspaces_root.expanduser().resolve()
    if root != folder and folder not in root.parents:
        return None
    return (f"--workspace {workspace} holds sandbox.workspaces_root {root}, where its jailed copy is made, so the copy would hold "
            f"itself: run the command from outside the workspace (cd ..; --workspace {folder.name}) or give the copies a folder "
            f"elsewhere (--set sandbox.workspaces_root=/tmp/trajforge-sandbox)")


def _tests_problem(tests: dict) -> str:
    limits = f", limits hit: {', '.join(tests['limits_hit'])}" if tests["limits_hit"] else ""
    counted = tests["passed"] + tests["failed"] + tests["errors"] + tests["skipped"]
    what = (f"tests failed: {tests['passed']} passed, {tests['failed']} failed, {tests['errors']} errors" if counted
            else "no tests ran (none found, or the runner stopped first)")
    return f"{what} (exit {tests['exit_code']}, signal {tests['signal']}{limits}): see \"tests\" in the output"


def run_command(args: argparse.Namespace) -> int:
    from sandbox.models import InvalidAction
    from sandbox.runner import Sandbox
    from sandbox.settings import load_sandbox_settings
    from trajforge.settings import parse_assignment

    settings = load_sandbox_settings(args.config, [parse_assignment(text) for text in args.assignments])
    if (problem := _copy_inside_itself(args.workspace, settings.workspaces_root)) is not None:
        print(f"trajforge sandbox: {problem}", file=sys.stderr)
        return 1
    box = Sandbox(settings)
    try:
        workspace = box.prepare_workspace(args.task_id, args.workspace)
    except InvalidAction as exc:
        print(f"trajforge sandbox: {exc}", file=sys.stderr)
        return 1
    try:
        result = box.apply_action(workspace, _read_action(args.action))
        output = result.model_dump(mode="json")
        status, problem = (0, None) if result.valid else (1, f"invalid action: {result.error}")
        if result.valid and args.tests:
            try:
                tests = box.run_tests(workspace, None if args.tests == "auto" else args.tests)
            except InvalidAction as exc:  # the action's result is still printed
                output["tests"] = {"error": str(exc)}
                status, problem = 1, f"tests not run: {exc}"
            else:
                output["tests"] = tests.model_dump(mode="json")
                status, problem = (0, None) if tests.ok else (1 if args.require_tests_pass else 0, _tests_problem(output["tests"]))
        print(json.dumps(output, indent=2, ensure_ascii=False))
        if problem:
            print(f"trajforge sandbox: {problem}", file=sys.stderr)
        return status
    finally:
        if args.keep:
            print(f"workspace kept: {workspace}", file=sys.stderr)
        else:
            box.cleanup(workspace)
