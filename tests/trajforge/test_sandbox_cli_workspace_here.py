"""`trajforge sandbox apply --workspace .` run inside the project: the jailed copies' folder would be inside the copy."""

from __future__ import annotations

import json
import subprocess
import sys

ACTION = json.dumps({"pattern": "print($A)", "rewrite": "logging.info($A)", "language": "python"})


def test_a_workspace_holding_the_copies_folder_is_refused_in_one_line_and_left_as_it_was(tmp_path):
    """It copied the project into its own `.sandbox/` until the path was too long: a kilobyte-long error, `.sandbox/` left."""
    project = tmp_path / "myproject"
    project.mkdir()
    (project / "app.py").write_text("print(1)\n")
    done = subprocess.run([sys.executable, "-m", "trajforge", "sandbox", "apply", "--workspace", ".", "--action", ACTION],
                          capture_output=True, text=True, cwd=project, timeout=120)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.splitlines() == [
        f"trajforge sandbox: --workspace . holds sandbox.workspaces_root {project / '.sandbox'}, where its jailed copy is made, so "
        "the copy would hold itself: run the command from outside the workspace (cd ..; --workspace myproject) or give the copies "
        "a folder elsewhere (--set sandbox.workspaces_root=/tmp/trajforge-sandbox)"]
    assert sorted(path.name for path in project.iterdir()) == ["app.py"]


def test_the_same_workspace_from_outside_it_or_with_the_copies_elsewhere_runs(tmp_path):
    project = tmp_path / "myproject"
    project.mkdir()
    (project / "app.py").write_text("print(1)\n")
    for cwd, extra in ((tmp_path, ["--workspace", "myproject"]),
                       (project, ["--workspace", ".", "--set", f"sandbox.workspaces_root={tmp_path / 'copies'}"])):
        done = subprocess.run([sys.executable, "-m", "trajforge", "sandbox", "apply", "--action", ACTION, *extra],
                              capture_output=True, text=True, cwd=cwd, timeout=300)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["matches"] == 1
    assert (project / "app.py").read_text() == "print(1)\n"
