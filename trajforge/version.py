"""The code version a build's manifest records and `trajforge --version` prints: the package version, plus the git
commit of the checkout it runs from (`.dirty` when tracked files changed), where there is one."""

from __future__ import annotations

import subprocess
from pathlib import Path

from trajforge import __version__

CHECKOUT = Path(__file__).resolve().parents[1]


def code_version() -> str:
    try:
        commit = subprocess.run(["git", "-C", str(CHECKOUT), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(CHECKOUT), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "", ""
    return f"{__version__}+{commit}{'.dirty' if dirty else ''}" if commit else __version__
