"""Test commands for a workspace and the passed/failed counts read from their output."""

from __future__ import annotations

import posixpath
import re
import shlex
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import ValidationError

from sandbox.models import InvalidAction, TestSpec

# Compile every .java file, then run each class whose name ends in Test (with `java -ea`): a class
# passes when it exits 0; a compile failure counts as one error (as pytest counts a collection error).
# For JUnit, give the command (for example the console launcher) instead.
JAVA_SCRIPT = """\
set -u
mkdir -p /tmp/classes
find . -name '*.java' > /tmp/sources
javac -d /tmp/classes @/tmp/sources || { echo "java tests: javac failed, Errors: 1"; exit 2; }
passed=0; failed=0
for class in $(cd /tmp/classes && find . -name '*Test.class' ! -name '*$*' | sed 's|^\\./||; s|\\.class$||; s|/|.|g'); do
  if java -ea -cp /tmp/classes "$class"; then passed=$((passed+1)); else failed=$((failed+1)); echo "FAILED $class"; fi
done
echo "java tests: $passed passed, $failed failed"
[ $failed -eq 0 ]
"""
SHELLS = {"sh", "bash", "dash", "zsh", "ksh", "csh", "tcsh", "fish", "busybox"}
DEFAULTS = {
    "pytest": [sys.executable, "-m", "pytest", "-q"],
    "unittest": [sys.executable, "-m", "unittest"],
    "node": ["node", "--test"],
    "java": ["/bin/sh", "-c", JAVA_SCRIPT],
}
N = r"(?<!\d)(\d{1,9})(?!\d)"
"""A count: at most 9 digits, not part of a longer number (jailed code writes the output: a run of digits must cost one
pass, not a regex backtracking over it from every position, and `int` refuses numbers over 4,300 digits)."""
COUNTERS = {
    "pytest": {"passed": rf"{N} passed", "failed": rf"{N} failed", "errors": rf"{N} errors?\b", "skipped": rf"{N} skipped"},
    "node": {"passed": rf"^[#ℹ] pass {N}", "failed": rf"^[#ℹ] fail {N}", "errors": rf"^[#ℹ] cancelled {N}", "skipped": rf"^[#ℹ] skipped {N}"},
    "java": {"passed": rf"{N} passed|\[\s*{N} tests successful", "failed": rf"{N} failed|\[\s*{N} tests failed",
             "errors": rf"Errors: {N}", "skipped": rf"Skipped: {N}|\[\s*{N} tests skipped"},
    # `python -m unittest` ends with "Ran N tests" and "OK" or "FAILED (failures=F, errors=E, skipped=S)"
    "unittest": {"ran": rf"^Ran {N} tests? in", "failed": rf"^(?:OK|FAILED) \((?:.*, )?failures={N}",
                 "errors": rf"^(?:OK|FAILED) \((?:.*, )?errors={N}", "skipped": rf"^(?:OK|FAILED) \((?:.*, )?skipped={N}"},
}


def parse_spec(spec: TestSpec | Mapping[str, Any] | str | list[str] | None) -> TestSpec:
    """A TestSpec from a model, a dict, a shell line or an argv list; None means detect everything."""
    if isinstance(spec, TestSpec):
        return spec
    if spec is None:
        return TestSpec()
    if isinstance(spec, (str, list)):
        spec = {"command": spec}
    if not isinstance(spec, Mapping):
        raise InvalidAction(f"a test spec is a command (a shell line or an argv list) or a mapping, got {type(spec).__name__}")
    try:
        return TestSpec.model_validate(dict(spec))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'spec'}: {e['msg']}" for e in exc.errors(include_url=False))
        raise InvalidAction(f"invalid test spec: {problems}") from None
    except (TypeError, ValueError) as exc:
        raise InvalidAction(f"invalid test spec: {exc}") from None


def _guess(command: list[str], workspace: Path) -> str:
    words = " ".join(command)
    for framework, marker in (("pytest", "pytest"), ("unittest", "unittest"), ("node", "node"), ("java", "java")):
        if marker in words:
            return framework
    names = {path.suffix for path in workspace.rglob("*") if not path.is_symlink()}
    if ".py" in names:
        return "pytest"
    if names & {".js", ".mjs", ".cjs", ".ts"}:
        return "node"
    if ".java" in names:
        return "java"
    raise InvalidAction("cannot tell which tests to run: give a command or framework (pytest, unittest, node, java)")


def resolve(spec: TestSpec, workspace: Path, allowed: list[str]) -> tuple[str, list[str]]:
    """(framework, argv) for a spec: its command, which must start an `allowed` program, or the framework's
    default (ours, so not checked: the Java runner is a `/bin/sh -c` script)."""
    try:
        command = shlex.split(spec.command) if isinstance(spec.command, str) else list(spec.command or [])
    except ValueError as exc:  # an unclosed quote
        raise InvalidAction(f"test command {spec.command!r} is not a valid shell line: {exc}") from None
    if command:
        check_allowed(command, allowed)
    framework = spec.framework if spec.framework != "auto" else _guess(command, workspace)
    if not command:
        if framework == "java" and shutil.which("javac") is None:
            raise InvalidAction("no JDK here (javac not found): install one or give a command")
        command = list(DEFAULTS[framework])
    return framework, command


def check_allowed(command: list[str], allowed: list[str]) -> None:
    """InvalidAction unless the command's program is on the allowlist (`python3.11` counts as `python`), named or
    given by an absolute path outside the workspace (a file of the task named `python` is the task's program, not one
    the list allows)."""
    given = command[0]
    if "/" in given and (not given.startswith("/") or PurePosixPath(posixpath.normpath(given)).is_relative_to("/workspace")):
        raise InvalidAction(f"test program {given!r} is a file of the workspace, not an allowed program: give the program by name "
                            f"(one of {', '.join(allowed) or 'nothing'}) and the workspace's files as its arguments")
    program = Path(given).name
    if re.sub(r"[\d.]+$", "", program) not in allowed and program not in allowed:
        shell = " (shells are left off the default list: `sh -c` would run anything)" if program in SHELLS else ""
        raise InvalidAction(
            f"test program {program!r} is not allowed{shell}: a test command may start {', '.join(allowed) or 'nothing'}. "
            f"Change the list in configs/sandbox.yaml (sandbox.allowed_test_programs) or with "
            f"--set 'sandbox.allowed_test_programs=[{', '.join([*allowed, program])}]'; "
            f"or give no command to run the framework's default (pytest -q, node --test, the Java runner)")


def count(framework: str, output: str) -> dict[str, int]:
    """Counts from the last summary the runner printed (0 for what it does not mention)."""
    counts = {}
    for name, pattern in COUNTERS[framework].items():
        found = re.findall(pattern, output, flags=re.MULTILINE)
        values = [int(next(group for group in match if group)) if isinstance(match, tuple) else int(match) for match in found]
        counts[name] = values[-1] if values else 0
    if framework == "unittest":  # unittest prints how many ran; passed are the rest
        counts["passed"] = max(0, counts.pop("ran") - counts["failed"] - counts["errors"] - counts["skipped"])
    return counts
