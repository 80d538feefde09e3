"""Files the ast-grep CLI skips without a word (over its size limit, not UTF-8) are named in the result."""

from __future__ import annotations

import pytest

from sandbox.runner import Sandbox

BIG = "x = 1\n" * 600_000 + "print(1)\n"  # 3.6 MB: over the CLI's own limit, which the jail's file size (256 MB) is not
FILES = {"big.py": BIG, "latin1.py": "# caf\xe9\nprint(2)\n".encode("latin-1"), "ok.py": "print(3)\n", "notes.txt": "print(4)\n"}
ACTIONS = [{"pattern": "print($A)", "rewrite": "log($A)", "language": "python"},
           {"id": "p", "language": "python", "rule": {"pattern": "print($A)"}, "fix": "log($A)"}]


def _check(box: Sandbox, action: dict) -> None:
    workspace = box.prepare_workspace("skipped", FILES)
    try:
        result = box.apply_action(workspace, action)
        assert result.valid, result.error
        assert result.skipped_files == {"big.py": "fileTooLarge", "latin1.py": "invalidUtf8"}
        assert result.matches == 1 and result.files_changed == ["ok.py"]
        assert "sg: " not in result.stderr.text  # the inspect lines stay out of the run's stderr
        assert (workspace / "big.py").read_text() == BIG
    finally:
        box.cleanup(workspace)


@pytest.mark.parametrize("action", ACTIONS, ids=["rewrite", "rule"])
def test_files_ast_grep_skips_are_named_with_its_reason(box, action):
    _check(box, action)


def test_skipped_files_without_a_jail(box):
    _check(Sandbox(box.settings.model_copy(update={"jail": "none"})), ACTIONS[0])


def test_nothing_skipped_is_an_empty_mapping_and_pattern_warnings_still_reach_stderr(box, workspace):
    assert box.apply_action(workspace, ACTIONS[0]).skipped_files == {}
    result = box.apply_action(workspace, {"pattern": "print((", "rewrite": "x", "language": "python"})
    assert not result.valid and "Pattern contains an ERROR node" in result.stderr.text
