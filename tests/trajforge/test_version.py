"""The code version: git's commit in a checkout, a digest of the sources where a job's working-dir copy has no .git."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from trajforge import __version__
from trajforge.version import CHECKOUT, PACKAGES, code_version


def _copy_without_git(target: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(CHECKOUT / package, target / package, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def test_a_checkout_reports_its_commit():
    assert re.fullmatch(rf"{re.escape(__version__)}\+[0-9a-f]{{12}}(\.dirty)?", code_version())


def test_a_copy_without_git_reports_a_digest_of_its_sources_that_follows_the_code(tmp_path):
    first = code_version(_copy_without_git(tmp_path / "a"))
    second = code_version(_copy_without_git(tmp_path / "b"))
    assert re.fullmatch(rf"{re.escape(__version__)}\+src\.[0-9a-f]{{12}}", first)
    assert first == second  # the same code on another machine or folder
    changed = tmp_path / "b" / "pipelines" / "build" / "job.py"
    changed.write_text(changed.read_text() + "\n# changed\n")
    assert code_version(tmp_path / "b") != first
