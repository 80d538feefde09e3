"""`trajforge sandbox apply` as an outside client sees it: exit statuses and messages for bad tests and workspaces."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox.models import InvalidAction

REPO = Path(__file__).resolve().parents[2]
ACTION = json.dumps({"pattern": "print($A)", "rewrite": "log($A)", "language": "python"})


@pytest.fixture()
def apply(box, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "app.py").write_text("print('hi')\n")
    (project / "test_app.py").write_text("def test_fails():\n    assert False\n")
    overrides = ["--set", f"sandbox.workspaces_root={box.settings.workspaces_root}", "--set", f"sandbox.logs_dir={box.settings.logs_dir}"]

    def run(*extra: str, workspace: Path = project) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "trajforge", "sandbox", *overrides, "apply", "--workspace", str(workspace),
                               "--action", ACTION, *extra], capture_output=True, text=True, cwd=REPO)
    return run


@pytest.mark.parametrize("command,message", [
    ("curl http://example.com", "'curl' is not allowed"),
    ("python -c 'unclosed", "not a valid shell line"),
    ("/workspace/python -m pytest", "is a file of the workspace"),  # named like an allowed program, but the task's own
    ("./pytest -q", "is a file of the workspace"),
    ("/usr/../workspace/bin/python x.py", "is a file of the workspace"),
])
def test_a_bad_test_command_exits_1_and_still_prints_the_actions_result(apply, command, message):
    run = apply("--tests", command)
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr and "tests not run: " in run.stderr and message in run.stderr
    output = json.loads(run.stdout)
    assert output["valid"] and output["files_changed"] == ["app.py"] and message in output["tests"]["error"]


def test_failing_tests_exit_0_as_the_action_ran_with_a_message_naming_the_counts_or_1_when_required_to_pass(apply):
    run = apply("--tests", "python -m pytest -q")
    assert run.returncode == 0  # the issue: exit 0 when the action ran; the tests' outcome is in the output
    assert "tests failed: 0 passed, 1 failed" in run.stderr
    assert json.loads(run.stdout)["tests"]["failed"] == 1
    strict = apply("--tests", "python -m pytest -q", "--require-tests-pass")
    assert strict.returncode == 1 and "tests failed: 0 passed, 1 failed" in strict.stderr


def test_tests_that_find_nothing_to_run_say_so_instead_of_0_failed(apply, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "app.py").write_text("print('hi')\n")
    run = apply("--tests", "python -m pytest -q", "--require-tests-pass", workspace=bare)
    assert run.returncode == 1 and "no tests ran (none found, or the runner stopped first) (exit 5" in run.stderr


def test_an_action_that_is_neither_a_file_nor_json_says_what_action_takes(apply):
    run = apply("--action", "pattern: print($A)")
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert "--action 'pattern: print($A)' is not a file: give ACTION.json (or .yaml), '-' to read stdin, or the JSON itself" in run.stderr


def test_an_invalid_workspace_exits_1_like_an_invalid_action(apply, tmp_path):
    outside = tmp_path / "linked"
    outside.mkdir()
    (outside / "secret.py").symlink_to("/etc/passwd")
    run = apply(workspace=outside)
    assert run.returncode == 1 and "points outside the snapshot" in run.stderr
    missing = apply(workspace=tmp_path / "nope")
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    a_file = tmp_path / "afile"
    a_file.write_text("x\n")
    not_a_folder = apply(workspace=a_file)
    assert not_a_folder.returncode == 1 and f"snapshot directory {a_file} is a file, not a directory" in not_a_folder.stderr


def test_an_action_file_of_binary_bytes_is_one_line_not_a_decode_traceback(apply, tmp_path):
    action = tmp_path / "action.json"
    action.write_bytes(b"\xa1\xff\x00 not text")
    run = apply("--action", str(action))
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    assert f"--action '{action}' cannot be read as text" in run.stderr


@pytest.mark.parametrize("spec,message", [
    ("python -c 'unclosed", "not a valid shell line"),
    (5, "a test spec is a command"),
    ({"command": 5}, "command.str: Input should be a valid string"),
])
def test_malformed_test_specs_are_invalid_with_a_plain_message(box, workspace, spec, message):
    with pytest.raises(InvalidAction, match=message) as caught:
        box.run_tests(workspace, spec)
    assert "errors.pydantic.dev" not in str(caught.value)


@pytest.mark.skipif(shutil.which("javac") is None, reason="no JDK on this machine")
def test_java_sources_that_do_not_compile_count_as_an_error(box):
    ws = box.prepare_workspace("java-broken", {
        "Calc.java": "public class Calc { static int add(int a, int b) { return LOG.x(a + b); } }\n",
        "CalcTest.java": "public class CalcTest { public static void main(String[] a) { } }\n"})
    try:
        result = box.run_tests(ws, {"framework": "java"})
    finally:
        box.cleanup(ws)
    assert (result.passed, result.failed, result.errors) == (0, 0, 1) and not result.ok
    assert "cannot find symbol" in result.stdout.text + result.stderr.text
