"""The ast-grep command lines the jail runs, assembled against a stand-in binary that records its arguments
(seed 002 section 4.3): what reaches ast-grep is exactly the action, argument by argument, never re-parsed by a shell."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from sandbox import astgrep
from sandbox.models import parse_action
from sandbox.settings import SandboxSettings

RECORDER = """#!/bin/sh
python3 -c 'import json, sys; print(json.dumps(sys.argv[1:]))' "$@" >> "{log}"
echo '[]'
"""


@pytest.fixture
def recorded(tmp_path, monkeypatch):
    """Run an action's command outside the jail, with /workspace, /out and /action mapped to folders of tmp_path and
    the CLI replaced by a recorder; returns the argv of each CLI call."""
    log = tmp_path / "calls.jsonl"
    fake = tmp_path / "ast-grep"
    fake.write_text(RECORDER.format(log=log))
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(astgrep, "cli_binary", lambda: str(fake))
    mounts = {name: tmp_path / name for name in ("workspace", "out", "action")}
    for folder in mounts.values():
        folder.mkdir()

    def run(action: dict, settings: SandboxSettings | None = None) -> list[list[str]]:
        argv = astgrep.command(parse_action(action), settings or SandboxSettings(), mounts["action"], mounts["out"])
        for name, folder in mounts.items():
            argv = [part.replace(f"/{name}", str(folder)) if part.startswith(f"/{name}") else part for part in argv]
        subprocess.run(argv, check=True, env={"PATH": os.environ["PATH"]})
        calls = [json.loads(line) for line in log.read_text().splitlines()]
        log.unlink()
        return [[part.replace(str(tmp_path), "") for part in call] for call in calls]

    return run


def test_a_rewrite_is_one_listing_pass_then_one_update_pass_with_the_action_verbatim(recorded):
    pattern, rewrite = 'print($$$A, "$(touch /tmp/owned)")', "logging.info($$$A) # `id`; rm -rf /"
    calls = recorded({"pattern": pattern, "rewrite": rewrite, "language": "py", "strictness": "relaxed"})
    options = ["--lang=python", "--strictness=relaxed", *(f"--no-ignore={kind}" for kind in astgrep.NO_IGNORE)]
    assert calls == [["run", "--pattern", pattern, "--rewrite", rewrite, *options, "--json=compact", "--inspect=entity", "/workspace"],
                     ["run", "--pattern", pattern, "--rewrite", rewrite, *options, "-U", "/workspace"]]
    assert not Path("/tmp/owned").exists()


def test_a_rule_is_written_to_the_read_only_action_mount_and_scanned_on_the_given_paths(recorded, tmp_path):
    rule = {"id": "no-print", "language": "python", "rule": {"pattern": "print($A)"}, "fix": "log($A)", "paths": ["src/a.py", "lib"]}
    calls = recorded(rule, SandboxSettings(include_hidden_and_ignored=False))
    assert calls == [["scan", "--rule", "/action/rule.yml", "--json=compact", "--inspect=entity", "/workspace/src/a.py", "/workspace/lib"],
                     ["scan", "--rule", "/action/rule.yml", "-U", "/workspace/src/a.py", "/workspace/lib"]]
    written = (tmp_path / "action" / "rule.yml").read_text()
    assert "id: no-print" in written and "print($A)" in written and "fix: log($A)" in written
