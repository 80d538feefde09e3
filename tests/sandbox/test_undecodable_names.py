"""File names and link targets that are not UTF-8, left in a workspace by jailed code (a Linux name is any bytes): the
next action still answers (`apply_action` never raises for what a task did) and says which files changed."""

from __future__ import annotations

import json

ACTION = {"pattern": "print($A)", "rewrite": "log($A)", "language": "python"}


def test_names_that_are_not_utf8_are_shown_escaped_not_a_crash(box, workspace):
    made = box.run_tests(workspace, {"framework": "pytest", "command": ["python3", "-c", (
        "import os\n"
        "open(b'\\xff\\xfe.py', 'wb').write(b'print(2)\\n')\n"
        "os.mkdir(b'd\\xff')\n"
        "open(b'd\\xff/x.py', 'wb').write(b'print(3)\\n')\n"
        "os.symlink(b'/nowhere/\\xfe', b'link')\n")]})
    assert made.exit_code == 0, made.stderr.text
    result = box.apply_action(workspace, ACTION)
    assert result.valid, result.error
    assert result.files_changed == ["\\xff\\xfe.py", "app.py", "d\\xff/x.py"]
    assert "+log(2)" in result.diff and "+++ b/d\\xff/x.py" in result.diff
    logged = json.loads((box.settings.logs_dir / f"{result.task_id}.jsonl").read_text(encoding="utf-8").splitlines()[-1])
    assert logged["files_changed"] == result.files_changed
    from sandbox.workspace import read_tree

    assert read_tree(workspace, 1 << 20)["link"] == "symlink -> /nowhere/\\xfe"
