"""`trajforge dashboard --out` given a path with no file name (`.`, `/`, empty) is one line, not a traceback."""

from __future__ import annotations

import pytest

from trajforge.cli.main import main


@pytest.mark.parametrize("out", [".", "/", ""])
def test_a_folder_by_its_name_is_one_line_naming_it(out, capsys, tmp_path, monkeypatch):
    """A ValueError from pathlib ('PosixPath('.') has an empty name') ended the command with a traceback, exit 1."""
    monkeypatch.chdir(tmp_path)
    assert main(["dashboard", "--out", out]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("trajforge dashboard: cannot write ") and "give --out a file" in error, error
    assert list(tmp_path.iterdir()) == []
