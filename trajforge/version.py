"""The code version a build's manifest records and `trajforge --version` prints: the package version, plus the git
commit of the checkout it runs from (`.dirty` when tracked files changed), where there is one. Where there is none
(a `ray job submit --working-dir` copy has no `.git`), a digest of the Python sources that run instead
(`+src.<12 hex>`): the same code gives the same digest on every machine."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from trajforge import __version__

CHECKOUT = Path(__file__).resolve().parents[1]
PACKAGES = ("trajforge", "pipelines", "actors", "learner", "sandbox", "serve_apps")


def code_version(checkout: Path = CHECKOUT) -> str:
    commit = _git_commit(checkout)
    return f"{__version__}+{commit}" if commit else f"{__version__}+src.{source_digest(checkout)}"


def _git_commit(checkout: Path) -> str:
    """`<short commit>[.dirty]`, or "" outside a git checkout."""
    if not (checkout / ".git").exists():
        return ""
    try:
        commit = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(checkout), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return f"{commit}{'.dirty' if dirty else ''}" if commit else ""


def source_digest(checkout: Path = CHECKOUT) -> str:
    """SHA-256 over the packages' `.py` files (relative path and content, in path order), 12 hex digits."""
    digest = hashlib.sha256()
    for package in PACKAGES:
        for path in sorted((checkout / package).rglob("*.py")):
            digest.update(path.relative_to(checkout).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]
