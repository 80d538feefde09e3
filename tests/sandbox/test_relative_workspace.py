"""A workspace named by a relative path (`.sandbox/<task>--<id>`, as the seed writes it) works like its absolute path:
it failed to mount in nsjail (a JailUnavailable naming nsjail) and, without a jail, matched nothing and looked valid."""

from __future__ import annotations

import os

import pytest

from sandbox.runner import Sandbox


@pytest.mark.parametrize("jail", ["nsjail", "none"])
def test_a_relative_workspace_path_is_the_same_workspace(box, jail, monkeypatch):
    sandbox = Sandbox(box.settings.model_copy(update={"jail": jail}))
    workspace = sandbox.prepare_workspace("relative", {"app.py": "print(1)\n", "test_app.py": "def test_a():\n    pass\n"})
    try:
        monkeypatch.chdir(workspace.parent.parent)
        relative = workspace.relative_to(workspace.parent.parent)
        assert not relative.is_absolute() and os.path.isdir(relative)
        result = sandbox.apply_action(relative, {"pattern": "print($A)", "rewrite": "log($A)", "language": "python"})
        assert result.valid and result.matches == 1 and result.files_changed == ["app.py"], result.error
        assert (workspace / "app.py").read_text() == "log(1)\n"
        tests = sandbox.run_tests(relative, "pytest -q")
        assert tests.passed == 1 and tests.exit_code == 0
    finally:
        sandbox.cleanup(workspace)
