"""Synthetic ast-grep tasks: enough per language, every kept task verified, a wrong `post` dropped."""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import inspect
import json
import logging
import re
import subprocess
import sys
import types
from collections import Counter
from pathlib import Path

import pytest

from pipelines.synth_templates import HOSTS, candidates, templates


def test_templates_cover_three_languages_and_at_least_200_candidates():
    assert len({t.name for t in templates()}) >= 10
    tasks = candidates()
    languages = Counter("javascript" if t["language"] == "typescript" else t["language"] for t in tasks)
    assert len(tasks) >= 200 and set(languages) == {"python", "javascript", "java"}
    assert len({t["task_id"] for t in tasks}) == len(tasks)


def test_each_template_goes_into_every_host_of_its_language_but_where_it_cannot():
    hosts = {(task["template"], int(task["task_id"].rsplit("-", 1)[1])) for task in candidates()}
    missing = {(t.name, index) for t in templates() for index in range(len(HOSTS[t.language]))} - hosts
    assert missing == {("assert-equals", 0), ("assert-equals", 2), ("assert-equals", 3)}  # only a method has a `self`


class Stub:
    """Whatever the code asks of an argument or an imported name: attributes, calls, awaits, `+=` give a Stub;
    it iterates as empty, has length 0 and contains nothing. Only a name that nothing defines still fails."""

    def __getattr__(self, name):
        return Stub()

    def __call__(self, *args, **kwargs):
        return Stub()

    def __await__(self):
        return iter(())

    def __iter__(self):
        return iter(())

    def __len__(self):
        return 0

    def __contains__(self, item):
        return False

    def __iadd__(self, other):
        return self


class StubModule(types.ModuleType):
    """A module of the project's own (`app.services`) that these snippets import: every name in it is a Stub."""

    def __getattr__(self, name):
        return Stub()


def _run_python(code: str, monkeypatch) -> None:
    """Execute the module (its imports of the project's own `app.*` modules answered by stubs), then call each of its
    functions and methods with a Stub for every parameter."""
    tree = ast.parse(code)
    for node in ast.walk(tree):
        for module in [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names] if isinstance(node, ast.Import) else []:
            parts = module.split(".")
            top = sys.modules.get(parts[0])
            if isinstance(top, StubModule) or (top is None and importlib.util.find_spec(parts[0]) is None):
                for name in (".".join(parts[:end]) for end in range(1, len(parts) + 1)):
                    if name not in sys.modules:
                        monkeypatch.setitem(sys.modules, name, StubModule(name))
    namespace: dict = {"__name__": "snippet"}
    exec(compile(tree, "snippet.py", "exec"), namespace)
    for node in tree.body:
        owner = namespace[node.name] if isinstance(node, ast.ClassDef) else None
        for function in [f for f in node.body if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))] if owner else [node]:
            if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                target = getattr(owner, function.name) if owner else namespace[function.name]
                result = target(*[Stub() for _ in inspect.signature(target).parameters])
                if inspect.iscoroutine(result):
                    with pytest.raises(StopIteration):
                        result.send(None)


def test_python_tasks_run_before_and_after_the_rewrite_with_every_name_defined(monkeypatch, caplog):
    """The code of every Python task, before and after its rewrite, runs in its host without an error: what the
    statement uses (rename-call's `user`, the called functions, `logging`, `retry`) is a parameter or an import, and
    what it logs is formatted (the log capture is at INFO, so a message whose arguments do not fit it fails here)."""
    caplog.set_level(logging.INFO)
    tasks = [task for task in candidates() if task["language"] == "python"]
    assert len(tasks) >= 300
    for task in tasks:
        for side in ("pre", "post"):
            try:
                _run_python(task[side], monkeypatch)
            except Exception as exc:
                pytest.fail(f"{task['task_id']} {side}: {type(exc).__name__}: {exc}\n{task[side]}")


CHECK_JS = """
const vm = require('vm'), { wrap } = require('module');
const problems = [];
for (const [id, code] of JSON.parse(require('fs').readFileSync(0, 'utf8'))) {
  try { /^(import|export) /m.test(code) ? new vm.SourceTextModule(code) : new vm.Script(wrap(code)); }
  catch (error) { problems.push(`${id}: ${error}`); }
}
console.log(JSON.stringify(problems));
"""


def test_javascript_tasks_parse_before_and_after_the_rewrite():
    """Node parses every JavaScript task, before and after: no `await` outside an async function, no `const` that the
    host declares already (new-buffer's `const user` in a host with a `user` is skipped)."""
    code = [[f"{task['task_id']} {side}", task[side]] for task in candidates() if task["language"] == "javascript" for side in ("pre", "post")]
    checked = subprocess.run(["node", "--experimental-vm-modules", "--no-warnings", "-e", CHECK_JS], input=json.dumps(code),
                             capture_output=True, text=True, check=True)
    assert json.loads(checked.stdout) == []


def test_typescript_and_java_tasks_parse_before_and_after_the_rewrite():
    """tree-sitter (ast-grep's parser) finds no syntax error in any TypeScript or Java task, before or after: a
    rewrite never leaves code that does not parse (a compile check would need each host's project)."""
    from ast_grep_py import SgRoot

    tasks = [task for task in candidates() if task["language"] in ("typescript", "java")]
    assert {task["language"] for task in tasks} == {"typescript", "java"}
    broken = [f"{task['task_id']} {side}: {errors[0].text()[:80]!r}" for task in tasks for side in ("pre", "post")
              if (errors := SgRoot(task[side], task["language"]).root().find_all(kind="ERROR"))]
    assert broken == []


def test_job_keeps_verified_tasks_and_drops_a_wrong_post(serve_url, tmp_path):
    from pipelines.synth_rules import run

    sample = [task for index, task in enumerate(candidates()) if index % 12 == 0]  # every template family, fast
    broken = dict(sample[0], task_id="synth-broken", post=sample[0]["post"].replace("(", "[", 1))
    report = run(tmp_path / "lake", workers=1, cpus_per_worker=0.05, tasks=[*sample, broken],
                 sandbox_assignments=[("sandbox.logs_dir", str(tmp_path / "sandbox-logs"))])
    out = tmp_path / "lake" / "raw" / "tasks" / "synth_rules"
    lines = (out / "tasks.jsonl").read_bytes()
    meta = json.loads((out / "_meta.json").read_text())
    kept = [json.loads(line) for line in lines.splitlines()]
    assert meta["num_records"] == len(kept) == len(sample) and meta["candidates"] == len(sample) + 1
    assert meta["sha256"] == hashlib.sha256(lines).hexdigest() and meta["license"] == "Apache-2.0" and meta["source"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", meta["version"]), meta["version"]  # seed 002 3.1: "<semver or commit hash>"
    assert "synth-broken" not in {task["task_id"] for task in kept}
    assert list(meta["dropped"].values()) == [1] and "differs from post" in next(iter(meta["dropped"]))
    assert [task["task_id"] for task in kept] == sorted(task["task_id"] for task in kept)
    assert set(kept[0]) >= {"instruction", "pre", "post", "language", "tags", "gold_action"}
    assert report["path"].endswith("tasks.jsonl")
    assert len(list((tmp_path / "sandbox-logs").glob("*.jsonl"))) == len(sample) + 1  # the stage's jails got the --set values


def test_sandbox_settings_are_applied_and_a_bad_one_stops_the_job_before_it_starts(tmp_path, capsys):
    from pipelines.synth_rules import main as module_main
    from trajforge.cli.main import main

    assert main(["synth-rules", "--lake", str(tmp_path / "lake"), "--set", "sandbox.wall_time_s=-1"]) == 2
    assert "sandbox.wall_time_s" in capsys.readouterr().err
    assert module_main(["--lake", str(tmp_path / "lake"), "--set", "sandbox.jail=chroot"]) == 2
    assert "sandbox.jail" in capsys.readouterr().err
    assert not (tmp_path / "lake").exists()


def test_a_lake_that_is_a_file_is_refused_before_any_jail_starts(tmp_path, capsys):
    """It was a NotADirectoryError raised in a Ray Data worker: a traceback of the verifying actors."""
    from trajforge.cli.main import main

    a_file = tmp_path / "lake"
    a_file.write_text("not a lake\n")
    assert main(["synth-rules", "--lake", str(a_file), "--limit", "1"]) == 2
    err = capsys.readouterr().err
    assert f"--lake: {a_file} is not a folder; give the lake to write the tasks into (nothing was written)" in err, err
    assert a_file.read_text() == "not a lake\n"


def test_a_run_that_verifies_nothing_fails_and_keeps_the_lakes_tasks(serve_url, tmp_path, capsys):
    from pipelines.synth_rules import NothingVerified, run

    lake = tmp_path / "lake"
    good = [task for index, task in enumerate(candidates()) if index % 100 == 0]
    run(lake, workers=1, cpus_per_worker=0.05, tasks=good)
    out = lake / "raw" / "tasks" / "synth_rules"
    before = {name: (out / name).read_bytes() for name in ("tasks.jsonl", "_meta.json")}
    broken = [dict(task, post=task["post"] + "# not what the action gives\n") for task in good]
    with pytest.raises(NothingVerified, match="left as it was: .*differs from post"):
        run(lake, workers=1, cpus_per_worker=0.05, tasks=broken)
    assert {name: (out / name).read_bytes() for name in before} == before


def test_help_says_what_the_job_writes_and_where(capsys):
    from pipelines.synth_rules import main as module_main
    from trajforge.cli.main import main

    for run in (lambda: main(["synth-rules", "--help"]), lambda: module_main(["--help"])):
        with pytest.raises(SystemExit):
            run()
        shown = capsys.readouterr().out
        assert "<lake>/raw/tasks/synth_rules/tasks.jsonl" in shown and "_meta.json" in shown and "exits 2" in shown
        assert shown.count("_meta.json") == 1  # the module's docstring says it too, but only its first paragraph is shown


@pytest.mark.parametrize("argument,value", [("--workers", "0"), ("--limit", "-5"), ("--limit", "x")])
def test_counts_below_one_are_refused_by_the_parser(tmp_path, capsys, argument, value):
    from trajforge.cli.main import main

    with pytest.raises(SystemExit) as caught:
        main(["synth-rules", "--lake", str(tmp_path / "lake"), argument, value])
    assert caught.value.code == 2 and argument in capsys.readouterr().err
    assert not (tmp_path / "lake").exists()


def test_every_template_verifies_in_every_host_snippet(serve_url, tmp_path):
    """One parameter set per template, in each host snippet of its language that it fits: multi-line statements (the
    loop of loop-to-comprehension) keep the host's indentation, so every one of them verifies."""
    from pipelines.synth_rules import run

    first = {}
    for task in candidates():
        first.setdefault((task["template"], task["task_id"].rsplit("-", 1)[1]), task)
    sample = list(first.values())
    assert {"loop-to-comprehension", "rename-call", "println-to-logger"} <= {task["template"] for task in sample}
    run(tmp_path / "lake", workers=1, cpus_per_worker=0.05, tasks=sample)
    kept = (tmp_path / "lake" / "raw" / "tasks" / "synth_rules" / "tasks.jsonl").read_text().splitlines()
    assert len(kept) == len(sample)


PUBLISH_AND_DIE = """
import os, signal, sys
from pathlib import Path
import pipelines.synth_rules as synth

real, calls, before, after = os.replace, [0], int(sys.argv[2]), int(sys.argv[3])

def replace_and_die(source, target):  # SIGKILL just before or just after the n-th rename
    calls[0] += 1
    if calls[0] == before:
        os.kill(os.getpid(), signal.SIGKILL)
    real(source, target)
    if calls[0] == after:
        os.kill(os.getpid(), signal.SIGKILL)

os.replace = replace_and_die
synth.publish(Path(sys.argv[1]), b"new\\n", {"sha256": __import__("hashlib").sha256(b"new\\n").hexdigest()})
"""


def _agree(folder) -> bytes:
    """The tasks of a tasks.jsonl / _meta.json pair whose meta describes them (sha256, as `run` writes it)."""
    data = (folder / "tasks.jsonl").read_bytes()
    assert json.loads((folder / "_meta.json").read_text())["sha256"] == hashlib.sha256(data).hexdigest()
    return data


@pytest.mark.parametrize("before,after", [(1, 0), (2, 0), (0, 2)])
def test_a_kill_while_publishing_never_leaves_tasks_and_meta_disagreeing(tmp_path, before, after):
    """Killed at each rename of a run's publishing, the lake has the old pair or the new one (or, between publish_dir's
    two renames, none and the old pair aside), never new tasks with old meta; the next run removes what it left."""
    from pipelines.synth_rules import publish

    out = tmp_path / "raw" / "tasks" / "synth_rules"
    publish(out, b"old\n", {"sha256": hashlib.sha256(b"old\n").hexdigest()})
    died = subprocess.run([sys.executable, "-c", PUBLISH_AND_DIE, str(out), str(before), str(after)], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2])
    assert died.returncode == -9, died.stderr[-2000:]
    if out.exists():
        assert _agree(out) == (b"new\n" if after else b"old\n")
    else:
        [aside] = out.parent.glob(".synth_rules.old-*")
        assert before == 2 and _agree(aside) == b"old\n"
    assert [path.name for path in out.parent.iterdir() if path.name.startswith(".")]  # what the killed run left
    publish(out, b"next\n", {"sha256": hashlib.sha256(b"next\n").hexdigest()})
    assert _agree(out) == b"next\n" and [path.name for path in out.parent.iterdir()] == ["synth_rules"]
