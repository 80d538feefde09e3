"""Who and what is sending: the contributor id, the machine fingerprint, the client's version hash."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

GROOVE_VERSION = "0.27.113"


def contributor_id_for(handle: str) -> str:
    """A stable 32-hex contributor id for a handle (the protocol never sees the handle itself)."""
    return hashlib.sha256(f"trajforge-contributor:{handle}".encode()).hexdigest()[:32]


def machine_fingerprint() -> str:
    import platform

    return hashlib.sha256(f"{platform.node()}:{uuid.getnode()}".encode()).hexdigest()


def app_version_hash() -> str:
    """sha256 of the client's code (its modules, in name order): the specification's `computeAppHash` of the app."""
    digest = hashlib.sha256()
    for module in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(module.read_bytes())
    return digest.hexdigest()
