"""An action's `paths` never pass through a link that jailed code left in the workspace: the host would follow it
(telling the task whether a host file exists), as the README promises links are never followed."""

from __future__ import annotations

ACTION = {"pattern": "print($A)", "rewrite": "log($A)", "language": "python"}


def test_a_path_through_a_planted_link_is_refused_naming_the_link(box, workspace):
    made = box.run_tests(workspace, {"framework": "pytest", "command": ["python3", "-c", (
        "import os\nos.symlink('/etc', 'hostetc')\nos.mkdir('src')\nos.symlink('../app.py', 'src/app_link.py')\n")]})
    assert made.exit_code == 0, made.stderr.text
    for path in ("hostetc/passwd", "hostetc/no-such-file"):  # the same answer whether the host has the file or not
        result = box.apply_action(workspace, {**ACTION, "paths": [path]})
        assert not result.valid and result.error == f"path {path!r} passes through the link 'hostetc' (links are never followed)"
    linked = box.apply_action(workspace, {**ACTION, "paths": ["src/app_link.py"]})  # a link as the path itself is as before
    assert linked.valid, linked.error
