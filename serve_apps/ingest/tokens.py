"""API tokens of the provenance API (seed 003): `sk_...` bearer tokens, each of one customer and one role.

A token is shown once, when it is made; the registry keeps only its sha256 (a token carries 256 random bits, so a
fast hash is enough: there is nothing to guess). Tokens live in `registry/provenance.db` beside the provenance
index, so several replicas share them.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from serve_apps.ingest import registry
from trajforge.contracts.provenance import TOKEN_PREFIX, iso
from trajforge.lake import Lake

SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    token_id TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,       -- sha256 of the token; the token itself is never stored
    customer_id TEXT NOT NULL,
    name TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('admin', 'user')),
    created_at REAL NOT NULL,
    created_by TEXT NOT NULL,              -- the token id that made it, 'admin-key', or 'open' (no credential)
    revoked_at REAL,
    signing_key TEXT                       -- base64 Ed25519 public key its events must be signed with (seed 003), or NULL
);
CREATE INDEX IF NOT EXISTS tokens_by_customer ON tokens (customer_id);
"""
ADMIN_KEY = "admin-key"
OPEN = "open"


@dataclass(frozen=True)
class Principal:
    """Who a request is: a token (of a customer, with a role), or the holder of an admin key (no customer)."""

    role: str
    token_id: str | None = None
    customer_id: str | None = None
    name: str | None = None
    signing_key: str | None = None  # its events must be signed with the matching private key (`event_signing`)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def label(self) -> str:
        return self.token_id or ADMIN_KEY


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def public(row: Any) -> dict[str, Any]:
    """A token's row as the API shows it: never the token or its hash."""
    return {"id": row["token_id"], "customer_id": row["customer_id"], "name": row["name"], "role": row["role"],
            "created_at": iso(row["created_at"]), "created_by": row["created_by"],
            "revoked_at": iso(row["revoked_at"]) if row["revoked_at"] is not None else None, "signed_events": row["signing_key"] is not None}


class TokenStore:
    def __init__(self, lake: Lake):
        self._lock = threading.Lock()
        self._conn = registry.connect(lake.provenance_db)
        self._conn.executescript(SCHEMA)
        if "signing_key" not in {row["name"] for row in self._conn.execute("PRAGMA table_info(tokens)")}:  # a registry made before it
            self._conn.execute("ALTER TABLE tokens ADD COLUMN signing_key TEXT")

    def create(self, customer_id: str, name: str, role: str | None, created_by: str, signing_key: str | None = None) -> tuple[str, dict[str, Any]]:
        """Make a token and answer it (once) with its public row. With no role asked, the first token of the
        registry is an admin (the seed's first user) and every later one a user."""
        token, token_id, now = new_token(), "tok_" + secrets.token_hex(8), time.time()
        with self._lock, registry.immediate(self._conn) as conn:
            if role is None:
                role = "user" if conn.execute("SELECT 1 FROM tokens LIMIT 1").fetchone() else "admin"
            conn.execute("INSERT INTO tokens (token_id, token_hash, customer_id, name, role, created_at, created_by, signing_key)"
                         " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (token_id, token_hash(token), customer_id, name, role, now, created_by, signing_key))
            row = conn.execute("SELECT * FROM tokens WHERE token_id = ?", (token_id,)).fetchone()
        return token, public(row)

    def principal(self, token: str) -> Principal | None:
        """The token's holder, or None for an unknown or revoked token."""
        with self._lock:
            row = self._conn.execute("SELECT token_id, customer_id, name, role, signing_key FROM tokens WHERE token_hash = ? AND revoked_at IS NULL",
                                     (token_hash(token),)).fetchone()
        return None if row is None else Principal(row["role"], row["token_id"], row["customer_id"], row["name"], row["signing_key"])

    def get(self, token_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._conn.execute("SELECT * FROM tokens WHERE token_id = ?", (token_id,)).fetchone()
        return None if row is None else public(row)

    def list(self, customer_id: str | None = None) -> list[dict[str, Any]]:
        query, args = "SELECT * FROM tokens", ()
        if customer_id is not None:
            query, args = query + " WHERE customer_id = ?", (customer_id,)
        with self._lock:
            return [public(row) for row in self._conn.execute(query + " ORDER BY created_at, token_id", args)]

    def update(self, token_id: str, *, role: str | None = None, revoke: bool = False) -> dict[str, Any] | None:
        """Change a token's role or revoke it; None when there is no such token."""
        with self._lock, registry.immediate(self._conn) as conn:
            if role is not None:
                conn.execute("UPDATE tokens SET role = ? WHERE token_id = ?", (role, token_id))
            if revoke:
                conn.execute("UPDATE tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE token_id = ?", (time.time(), token_id))
            row = conn.execute("SELECT * FROM tokens WHERE token_id = ?", (token_id,)).fetchone()
        return None if row is None else public(row)

    def close(self) -> None:
        self._conn.close()
