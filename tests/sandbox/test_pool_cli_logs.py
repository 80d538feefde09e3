"""The pool, the CLI, the JSON-lines log, test counting, and the explicit fallbacks."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from sandbox.jail import JailUnavailable, Mount
from sandbox.models import InvalidAction, parse_action
from bubblewrap_sandbox import bubblewrap_sandbox, needs_bwrap

from sandbox.pool import PoolFull, SandboxPool
from sandbox.process import run_jailed
from sandbox.runner import Sandbox
from sandbox.testing import count

REPO = Path(__file__).resolve().parents[2]


def test_pool_runs_jails_in_parallel_and_keeps_the_order(box):
    workspaces = [box.prepare_workspace(f"pool-{i}", {"a.py": f"print({i})\n"}) for i in range(6)]
    try:
        with SandboxPool(workers=3, sandbox=box) as pool:
            results = pool.apply_many((ws, {"pattern": "print($A)", "rewrite": f"log{i}($A)", "language": "python"})
                                      for i, ws in enumerate(workspaces))
    finally:
        for ws in workspaces:
            box.cleanup(ws)
    assert [r.valid for r in results] == [True] * 6
    assert [f"+log{i}({i})" in r.diff for i, r in enumerate(results)] == [True] * 6


def test_pool_queue_is_bounded(box):
    release = threading.Event()

    class Slow(Sandbox):
        def apply_action(self, workspace, action):
            release.wait(10)
            return "done"

    pool = SandboxPool(workers=1, queue_size=1, sandbox=Slow(box.settings))
    try:
        first, second = pool.submit_action(Path("."), {}), pool.submit_action(Path("."), {})
        with pytest.raises(PoolFull, match="1 jobs queued"):
            pool.submit_action(Path("."), {}, timeout_s=0.2)
        release.set()
        assert (first.result(5), second.result(5)) == ("done", "done")
        assert pool.submit_action(Path("."), {}, timeout_s=1).result(5) == "done"  # a slot freed up
    finally:
        release.set()
        pool.close()


def test_every_action_and_test_run_is_logged_as_one_json_line(box):
    ws = box.prepare_workspace("logged", {"a.py": "print(1)\n", "test_a.py": "def test_x():\n    assert True\n"})
    try:
        box.apply_action(ws, {"pattern": "print($A)", "rewrite": "log($A)", "language": "python"})
        box.apply_action(ws, {"pattern": "x", "language": "klingon", "rewrite": "y"})
        box.run_tests(ws, "python -m pytest -q")
    finally:
        box.cleanup(ws)
    lines = [json.loads(line) for line in (box.settings.logs_dir / "logged.jsonl").read_text().splitlines()]
    assert [(entry["kind"], entry.get("valid")) for entry in lines] == [("action", True), ("action", False), ("tests", None)]
    assert lines[0]["diff"].startswith("--- a/a.py") and lines[2]["passed"] == 1


def test_an_invalid_action_is_logged_as_invalid_with_why_and_what_was_given_capped(box):
    from sandbox.models import RAW_KEEP_BYTES

    given = ["language: python\npattern: [" + "x" * (1 << 20), "not: [valid", "{pattern: 'print($A)', language: python}",
             {"pattern": {"print($A)"}, "rewrite": "log($A)", "language": "python"},  # a set: not JSON
             {"pattern": "print($A)", "rewrite": "log($A)", "language": "python", "paths": ["nope.py"]},
             {"pattern": "print($A)", "rewrite": "log('\ud800', $A)", "language": "python"}]  # a lone surrogate: it raised
    ws = box.prepare_workspace("invalid-logged", {"a.py": "print(1)\n"})
    try:
        for action in given:
            box.apply_action(ws, action)
    finally:
        box.cleanup(ws)
    text = (box.settings.logs_dir / "invalid-logged.jsonl").read_text()
    lines = [json.loads(line) for line in text.splitlines()]
    assert [(entry["kind"], entry["valid"]) for entry in lines] == [("action", False)] * 6
    assert lines[0]["action"] == {"unparsed": given[0][:RAW_KEEP_BYTES], "bytes": len(given[0]), "truncated": True}
    assert "not valid YAML or JSON" in lines[0]["error"] and len(text.encode()) < 5 * RAW_KEEP_BYTES
    assert lines[1]["action"] == {"unparsed": "not: [valid", "bytes": 11, "truncated": False} and "not valid YAML" in lines[1]["error"]
    assert lines[2]["action"] == {"unparsed": given[2], "bytes": len(given[2]), "truncated": False} and "rewrite" in lines[2]["error"]
    assert lines[3]["action"]["unparsed"].startswith("{'pattern': {'print($A)'}") and "pattern" in lines[3]["error"]
    assert lines[4]["action"]["paths"] == ["nope.py"] and "'nope.py' is not in the workspace" in lines[4]["error"]
    assert lines[5]["action"]["unparsed"] == json.dumps(given[5], ensure_ascii=False).replace("\ud800", "?") and "rewrite" in lines[5]["error"]


@pytest.mark.parametrize("framework,output,expected", [
    ("pytest", "....F\n1 failed, 4 passed, 2 skipped in 0.20s\n", (4, 1, 0, 2)),
    ("pytest", "ERROR test_x.py\n1 passed, 3 errors in 0.1s\n", (1, 0, 3, 0)),
    ("node", "TAP version 13\n# tests 3\n# pass 2\n# fail 1\n# cancelled 0\n# skipped 0\n", (2, 1, 0, 0)),
    ("node", "✔ a (1ms)\nℹ tests 2\nℹ pass 2\nℹ fail 0\n", (2, 0, 0, 0)),
    ("java", "java tests: 3 passed, 1 failed\n", (3, 1, 0, 0)),
    ("java", "[         5 tests successful      ]\n[         2 tests failed          ]\n", (5, 2, 0, 0)),
    ("unittest", "..\n------\nRan 5 tests in 0.002s\n\nFAILED (failures=1, errors=1, skipped=1)\n", (2, 1, 1, 1)),
    ("unittest", "Ran 3 tests in 0.001s\n\nOK (skipped=1, expected failures=1)\n", (2, 0, 0, 1)),
])
def test_counts_are_read_from_each_runner(framework, output, expected):
    got = count(framework, output)
    assert (got["passed"], got["failed"], got["errors"], got["skipped"]) == expected


def test_unittest_runs_in_the_jail_with_its_counts(box):
    ws = box.prepare_workspace("unittest", {"test_a.py": (
        "import unittest\n\nclass T(unittest.TestCase):\n    def test_ok(self):\n        pass\n\n    def test_bad(self):\n"
        "        self.assertEqual(1, 2)\n\n    def test_error(self):\n        raise ValueError\n\n"
        "    @unittest.skip('x')\n    def test_skipped(self):\n        pass\n")})
    try:
        results = [box.run_tests(ws, "python -m unittest"), box.run_tests(ws, {"framework": "unittest"})]
    finally:
        box.cleanup(ws)
    for result in results:  # they were read as pytest's output: 0 passed, 0 failed
        assert (result.framework, result.passed, result.failed, result.errors, result.skipped) == ("unittest", 1, 1, 1, 1)
        assert result.exit_code == 1 and not result.ok


def test_node_tests_run_in_the_jail(box):
    ws = box.prepare_workspace("node", {"math.test.js": "const test = require('node:test');\nconst assert = require('node:assert');\n"
                                        "test('adds', () => assert.equal(1 + 1, 2));\ntest('breaks', () => assert.equal(1, 2));\n"})
    try:
        result = box.run_tests(ws, {"framework": "node"})
    finally:
        box.cleanup(ws)
    assert (result.passed, result.failed) == (1, 1) and not result.ok


@pytest.mark.skipif(shutil.which("javac") is None, reason="no JDK on this machine")
def test_java_tests_run_in_the_jail(box):
    ws = box.prepare_workspace("java", {
        "src/Calc.java": "public class Calc { static int add(int a, int b) { return a + b; } }\n",
        "src/CalcTest.java": "public class CalcTest { public static void main(String[] a) { if (Calc.add(1, 2) != 3) System.exit(1); } }\n",
        "src/BrokenTest.java": "public class BrokenTest { public static void main(String[] a) { System.exit(Calc.add(1, 1) == 3 ? 0 : 1); } }\n"})
    try:
        result = box.run_tests(ws, {"framework": "java"})
    finally:
        box.cleanup(ws)
    assert (result.passed, result.failed) == (1, 1), result.stdout.text + result.stderr.text


def test_a_test_program_off_the_allowlist_is_refused_and_a_missing_one_reported(box, workspace):
    with pytest.raises(InvalidAction, match="'curl' is not allowed"):
        box.run_tests(workspace, ["/usr/bin/curl", "http://example.com"])
    missing = Sandbox(box.settings.model_copy(update={"allowed_test_programs": ["no-such-runner"]}))
    result = missing.run_tests(workspace, ["no-such-runner", "--flag"])
    assert result.exit_code == 127 and "command not found" in result.stderr.text


def test_the_specifications_allowlist_ast_grep_python_pytest_may_start_a_test_command(box, workspace):
    """Seed 002 section 9: the sandbox's allowlist of binaries is ast-grep, python and pytest."""
    from sandbox.settings import SandboxSettings

    assert {"ast-grep", "python", "pytest"} <= set(box.settings.allowed_test_programs) & set(SandboxSettings().allowed_test_programs)
    result = box.run_tests(workspace, ["ast-grep", "run", "--pattern", "print($A)", "--lang", "python", "app.py"])
    assert result.exit_code == 0 and "print(x)" in result.stdout.text  # ast-grep was refused: not on the list


@pytest.mark.parametrize("command", [["sh", "-c", "echo hi"], ["/bin/bash", "-c", "echo hi"], "dash -c 'echo hi'", ["sh", "run.sh"]])
def test_a_shell_is_not_on_the_default_allowlist_and_the_refusal_says_what_is_and_where_to_change_it(box, workspace, command):
    from sandbox.settings import SandboxSettings

    shipped = set(box.settings.allowed_test_programs) | set(SandboxSettings().allowed_test_programs)  # configs/sandbox.yaml, the model's default
    assert not {"sh", "bash", "dash"} & shipped
    with pytest.raises(InvalidAction) as refused:
        box.run_tests(workspace, {"command": command, "framework": "pytest"})
    message = str(refused.value)
    assert "is not allowed (shells are left off the default list: `sh -c` would run anything)" in message
    assert "may start python, pytest, node" in message and "configs/sandbox.yaml (sandbox.allowed_test_programs)" in message


def test_a_frameworks_default_command_is_ours_and_not_held_to_the_allowlist(box, workspace):
    """The defaults are ours (the Java runner is a /bin/sh script): pytest's runs with python off the list."""
    narrow = Sandbox(box.settings.model_copy(update={"allowed_test_programs": ["node"]}))
    assert narrow.run_tests(workspace, {"framework": "pytest"}).passed == 1
    with pytest.raises(InvalidAction, match="'python' is not allowed: a test command may start node"):
        narrow.run_tests(workspace, {"command": "python -m pytest -q"})


def test_no_jail_is_explicit_and_says_so_in_every_result(box, workspace, caplog):
    loose = Sandbox(box.settings.model_copy(update={"jail": "none"}))
    ws = loose.prepare_workspace("nojail", {"a.py": "print(1)\n"})
    try:
        with caplog.at_level("WARNING"):
            result = loose.apply_action(ws, {"pattern": "print($A)", "rewrite": "log($A)", "language": "python"})
            tests = loose.run_tests(ws, ["python3", "-c", "print('ran')"])
    finally:
        loose.cleanup(ws)
    assert result.valid and result.jail == "none" and "+log(1)" in result.diff
    assert tests.jail == "none" and "ran" in tests.stdout.text


def test_a_jail_that_cannot_start_is_an_error(box, workspace, tmp_path):
    with pytest.raises(JailUnavailable, match="nsjail could not start the jail"):
        run_jailed(box.settings, ["/bin/true"], workspace, extra_mounts=[Mount(tmp_path / "missing", "/missing")])


@needs_bwrap
def test_bubblewrap_fallback_runs_as_the_unprivileged_uid(box):
    with bubblewrap_sandbox(box.settings, ["id"]) as wrapped:
        ws = wrapped.prepare_workspace("bwrap", {"a.txt": "x"})
        result = wrapped.run_tests(ws, {"command": ["id", "-u"], "framework": "pytest"})
        hidden = Sandbox(wrapped.settings.model_copy(update={"workspaces_root": box.settings.workspaces_root}))
        private = hidden.prepare_workspace("bwrap-private", {"a.txt": "x"})
        with pytest.raises(JailUnavailable, match="bubblewrap could not start"):
            hidden.run_tests(private, {"command": ["id", "-u"], "framework": "pytest"})
        hidden.cleanup(private)
    assert result.jail == "bwrap" and result.stdout.text.strip() == str(box.settings.uid)


def test_cli_apply_prints_the_result_and_leaves_the_directory_alone(tmp_path, box):
    project = tmp_path / "project"
    project.mkdir()
    (project / "app.py").write_text("print('hi')\n")
    (project / "test_app.py").write_text("def test_ok():\n    assert True\n")
    action = tmp_path / "action.json"
    action.write_text(json.dumps({"pattern": "print($A)", "rewrite": "log($A)", "language": "python"}))
    overrides = ["--set", f"sandbox.workspaces_root={box.settings.workspaces_root}", "--set", f"sandbox.logs_dir={box.settings.logs_dir}"]
    run = subprocess.run([sys.executable, "-m", "trajforge", "sandbox", *overrides, "apply", "--workspace", str(project),
                          "--action", str(action), "--tests", "python -m pytest -q"], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr
    output = json.loads(run.stdout)
    assert output["valid"] and output["files_changed"] == ["app.py"] and output["tests"]["passed"] == 1
    assert (project / "app.py").read_text() == "print('hi')\n"
    bad = subprocess.run([sys.executable, "-m", "trajforge", "sandbox", *overrides, "apply", "--workspace", str(project),
                          "--action", '{"pattern": "x", "rewrite": "y", "language": "cobol"}'], capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 1 and "unknown language 'cobol'" in bad.stderr


def test_parse_action_accepts_yaml_rule_text():
    action = parse_action("id: r\nlanguage: ts\nrule:\n  pattern: $A as any\nfix: $A as unknown\n")
    assert action.type == "rule" and action.language == "typescript" and action.fix == "$A as unknown"


def test_parse_action_accepts_any_json_a_tab_indented_file_included():
    given = {"pattern": "print($A)", "rewrite": "log($A)", "language": "python", "paths": ["src/a.py"]}
    action = parse_action(json.dumps(given, indent="\t"))  # YAML refuses a tab that indents: 'not valid YAML or JSON'
    assert action.model_dump(exclude_none=True) == {**given, "type": "rewrite"}


def test_a_ray_actor_owns_a_pool_and_ray_data_verifies_actions_through_it(serve_url, box):
    """The production shape: a Ray actor holding a SandboxPool, fed from a Ray Data pipeline."""
    import ray

    @ray.remote(num_cpus=0)
    class Verifier:
        def __init__(self, settings):
            self.pool = SandboxPool(workers=2, settings=settings)

        def verify(self, rows):
            sandbox = self.pool.sandbox
            workspaces = [sandbox.prepare_workspace(row["task_id"], {"a.py": row["code"]}) for row in rows]
            try:
                results = self.pool.apply_many(zip(workspaces, [row["action"] for row in rows]))
            finally:
                for workspace in workspaces:
                    sandbox.cleanup(workspace)
            return [{"task_id": row["task_id"], "valid": r.valid, "diff": r.diff, "jail": r.jail} for row, r in zip(rows, results)]

    verifier = Verifier.remote(box.settings)
    rows = [{"task_id": f"ray-{i}", "code": f"print({i})\n", "action": {"pattern": "print($A)", "rewrite": "log($A)", "language": "python"}}
            for i in range(4)]
    def verify(batch):
        batch_rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        return {"out": ray.get(verifier.verify.remote(batch_rows))}

    dataset = ray.data.from_items(rows).map_batches(verify, batch_size=2, num_cpus=0.05)
    out = sorted((row["out"] for row in dataset.take_all()), key=lambda row: row["task_id"])
    assert [row["valid"] for row in out] == [True] * 4
    assert all(row["jail"] == "nsjail" and f"+log({i})" in row["diff"] for i, row in enumerate(out))
