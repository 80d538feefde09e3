"""The bubblewrap fallback in the tests: skipped where bwrap is not installed (it comes from apt, not the venv)."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path

import pytest

from sandbox.runner import Sandbox

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap not installed (apt-get install bubblewrap)")


@contextlib.contextmanager
def bubblewrap_sandbox(settings, allowed_test_programs: list[str]):
    """`settings` with `jail: bwrap`, workspaces in a fresh folder the jail's uid can reach (bwrap, started by root,
    runs as sandbox.uid), removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="trajforge-bwrap-"))
    root.chmod(0o755)
    try:
        yield Sandbox(settings.model_copy(update={"jail": "bwrap", "toolchain": ["/usr", "/lib", "/lib64", "/bin"],
                                                  "workspaces_root": root, "allowed_test_programs": allowed_test_programs}))
    finally:
        shutil.rmtree(root, ignore_errors=True)
