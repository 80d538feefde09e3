"""Where things live in the lake. Every component asks this module for paths instead of joining strings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Lake:
    root: Path

    @classmethod
    def at(cls, root: str | Path) -> "Lake":
        return cls(Path(root).expanduser().resolve())

    @property
    def raw(self) -> Path:
        return self.root / "raw"

    @property
    def raw_envelopes(self) -> Path:
        """Append-only envelope segments, partitioned `date=YYYY-MM-DD/`."""
        return self.raw / "envelopes"

    @property
    def registry_db(self) -> Path:
        """SQLite: sessions, processed envelopes (the HMAC dedup index), segments, gaps, ledger."""
        return self.root / "registry" / "ingest.db"

    @property
    def default_key_file(self) -> Path:
        return self.root / "keys" / "ingest.key"

    @property
    def quarantine(self) -> Path:
        """Bytes cut off damaged files (torn tails), kept for inspection, never read as data."""
        return self.root / "quarantine"

    def ensure(self) -> "Lake":
        """Create the lake's folders, each private to its owner (0700) when this call creates it."""
        for path in (self.root, self.raw, self.raw_envelopes, self.registry_db.parent, self.quarantine):
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self
