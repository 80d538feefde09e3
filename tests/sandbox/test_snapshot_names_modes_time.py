"""Snapshots keep exec bits and refuse what a portable tree cannot hold; a fractional wall time is kept exactly."""

from __future__ import annotations

import os

import pytest

from sandbox.models import InvalidAction
from sandbox.runner import Sandbox


def test_a_snapshot_keeps_its_executable_script_for_the_tests(box, tmp_path):
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    (snapshot / "run.sh").write_text("#!/bin/sh\necho from-script\n")
    (snapshot / "run.sh").chmod(0o755)
    (snapshot / "data.txt").write_text("plain\n")
    (snapshot / "test_run.py").write_text(
        "import subprocess\n\ndef test_script():\n    assert subprocess.run(['./run.sh'], capture_output=True, text=True).stdout == 'from-script\\n'\n")
    ws = box.prepare_workspace("exec-bits", snapshot)
    try:
        assert os.stat(ws / "run.sh").st_mode & 0o777 == 0o755 and os.stat(ws / "data.txt").st_mode & 0o777 == 0o644
        result = box.run_tests(ws, {"framework": "pytest"})
        assert result.ok and result.passed == 1, result.stdout.text
        assert os.stat(ws / "run.sh").st_mode & 0o111  # and still after the run
    finally:
        box.cleanup(ws)


@pytest.mark.parametrize("files", [{"App.py": "", "app.py": ""}, {"Src/a.py": "", "src/b.py": ""}])
def test_paths_that_differ_only_in_case_are_refused(box, files):
    with pytest.raises(InvalidAction, match="differ only in case"):
        box.prepare_workspace("case-clash", files)
    assert not [p for p in box.settings.workspaces_root.iterdir() if p.name.startswith("case-clash--")]


def test_a_snapshot_directory_with_a_case_only_clash_is_refused(box, tmp_path):
    snapshot = tmp_path / "snapshot"
    (snapshot / "Src").mkdir(parents=True)
    (snapshot / "src").mkdir()
    (snapshot / "Src" / "a.py").write_text("")
    with pytest.raises(InvalidAction, match="'Src' and 'src' differ only in case|'src' and 'Src' differ only in case"):
        box.prepare_workspace("case-clash-dir", snapshot)


def test_content_with_a_lone_surrogate_is_invalid_naming_the_file_not_a_unicode_error(box):
    # a task read from JSON can carry "\ud800" as an escape; writing it raised UnicodeEncodeError, not InvalidAction
    with pytest.raises(InvalidAction, match=r"content of 'b.py' holds a lone UTF-16 surrogate \('\\ud800' at character 5\)"):
        box.prepare_workspace("lone-surrogate", {"a.py": "x = '😀'\r\n", "b.py": "x = '\ud800'\n"})
    assert not [p for p in box.settings.workspaces_root.iterdir() if p.name.startswith("lone-surrogate--")]


@pytest.mark.parametrize("path, message", [("a" * 256 + ".py", "a name of 259 bytes"),
                                           ("/".join(["d" * 200] * 6) + "/x.py", "bytes long")])
def test_too_long_names_and_paths_are_invalid_not_a_crash(box, path, message):
    with pytest.raises(InvalidAction, match=message):
        box.prepare_workspace("long-path", {path: "x = 1\n"})


def test_a_fractional_wall_time_is_the_limit_not_the_next_whole_second(box, workspace):
    half = Sandbox(box.settings.model_copy(update={"wall_time_s": 1.5}))
    result = half.run_tests(workspace, {"command": ["python3", "-c", "import time\ntime.sleep(1.9)\nprint('done')\n"], "framework": "pytest"})
    assert "time" in result.limits_hit and "done" not in result.stdout.text
    assert result.wall_s < 1.9
