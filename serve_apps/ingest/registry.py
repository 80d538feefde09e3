"""The session registry and the envelope index, in SQLite (WAL) under the lake.

Several replicas (processes) share the file; every check-and-advance of a sequence happens inside a
`BEGIN IMMEDIATE` transaction, which SQLite serializes across processes, so two replicas can never
accept the same sequence of a session. Past one node, shard by session id: one registry actor (or
one database) per hash range of session ids, each owning its sessions' sequence counters, with the
ingest replicas routing a request to the shard of its session; the raw segments need no change.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY,
    server_private_key TEXT NOT NULL,      -- sealed with the SecretBox, never stored in clear
    server_public_key TEXT NOT NULL,
    shared_secret TEXT NOT NULL,           -- sealed
    client_public_key TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    machine_fingerprint TEXT NOT NULL,
    app_version_hash TEXT NOT NULL,
    groove_version TEXT NOT NULL,
    contributor_id TEXT,
    last_sequence INTEGER NOT NULL DEFAULT -1,
    envelope_count INTEGER NOT NULL DEFAULT 0,
    step_count INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'active',
    created_at REAL NOT NULL,
    closed_at REAL
);
CREATE INDEX IF NOT EXISTS sessions_by_machine ON sessions (machine_fingerprint, created_at);
CREATE TABLE IF NOT EXISTS segments (
    segment_id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,             -- relative to the lake root
    writer TEXT NOT NULL,
    committed_offset INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'open',   -- open (a writer may be appending) or sealed
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS envelopes (
    hmac TEXT PRIMARY KEY,                 -- the dedup key: a replay carries the same HMAC
    envelope_id TEXT NOT NULL UNIQUE,
    session_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    contributor_id TEXT,
    steps INTEGER NOT NULL,
    segment_id INTEGER NOT NULL REFERENCES segments (segment_id),
    offset INTEGER NOT NULL,
    length INTEGER NOT NULL,
    received_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS envelopes_by_session ON envelopes (session_id, sequence);
CREATE INDEX IF NOT EXISTS envelopes_by_time ON envelopes (received_at);
CREATE TABLE IF NOT EXISTS sequence_gaps (
    session_id TEXT NOT NULL,
    expected INTEGER NOT NULL,
    received INTEGER NOT NULL,
    recorded_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS credits (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    contributor_id TEXT NOT NULL,
    session_id TEXT NOT NULL UNIQUE,       -- a session is credited once
    points REAL NOT NULL,
    base_points INTEGER NOT NULL,
    multiplier_breakdown TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS balances (
    contributor_id TEXT PRIMARY KEY,
    total_points REAL NOT NULL DEFAULT 0,
    total_sessions INTEGER NOT NULL DEFAULT 0,
    last_credit_at REAL,
    trust_score REAL NOT NULL DEFAULT 1.0 CHECK (trust_score BETWEEN 0 AND 10)
);
"""


def check_sealing_key(conn: sqlite3.Connection, box, key_source: str, registry_db: Path) -> None:
    """Refuse a key that does not open the secrets this registry sealed (another TRAJFORGE_SECRET_KEY, a key file lost and
    made anew): every envelope of the sessions opened before would be a 500 that clients retry for ever."""
    from cryptography.exceptions import InvalidTag

    row = conn.execute("SELECT shared_secret FROM sessions ORDER BY created_at DESC LIMIT 1").fetchone()
    if row is None:
        return
    try:
        box.open(row["shared_secret"])
    except (InvalidTag, ValueError):
        raise ValueError(f"the secret key ({key_source}) does not open the session secrets sealed in {registry_db}: start "
                         "with the key that sealed them (the same TRAJFORGE_SECRET_KEY, or that key file restored from a "
                         "backup); with another key no session opened before could be continued") from None


def connect(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode; callers open transactions explicitly with `immediate()`."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():  # SQLite gives its -wal and -shm files the database file's mode
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    conn = sqlite3.connect(path, isolation_level=None, timeout=60.0, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    # NORMAL is safe here: the raw segments are the source of truth and are fsync'd before a commit;
    # a registry commit lost to a power cut is re-derived from them by recovery.
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def create_schema(conn: sqlite3.Connection) -> None:
    with immediate(conn):
        for statement in SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)


@contextlib.contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A write transaction that takes SQLite's write lock at BEGIN (serialized across processes)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


@dataclass
class SessionState:
    """The mutable part of a session row, as one group commit sees and updates it."""

    session_id: str
    status: str
    last_sequence: int
    envelope_count: int
    step_count: int
    contributor_id: str | None
    has_close_envelope: bool = False
    dirty: bool = False


def load_state(conn: sqlite3.Connection, session_id: str) -> SessionState | None:
    row = conn.execute(
        "SELECT status, last_sequence, envelope_count, step_count, contributor_id,"
        " EXISTS (SELECT 1 FROM envelopes e WHERE e.session_id = s.session_id AND e.kind = 'SESSION_CLOSE') AS has_close"
        " FROM sessions s WHERE session_id = ?",
        (session_id,),
    ).fetchone()
    if row is None:
        return None
    return SessionState(
        session_id, row["status"], row["last_sequence"], row["envelope_count"], row["step_count"], row["contributor_id"], bool(row["has_close"])
    )


def save_state(conn: sqlite3.Connection, state: SessionState, now: float) -> None:
    conn.execute(
        "UPDATE sessions SET status = ?, last_sequence = ?, envelope_count = ?, step_count = ?,"
        " contributor_id = COALESCE(contributor_id, ?),"
        " closed_at = CASE WHEN ? = 'closed' AND closed_at IS NULL THEN ? ELSE closed_at END WHERE session_id = ?",
        (state.status, state.last_sequence, state.envelope_count, state.step_count, state.contributor_id, state.status, now, state.session_id),
    )


def sessions_opened_since(conn: sqlite3.Connection, machine_fingerprint: str, since: float) -> list[float]:
    rows = conn.execute(
        "SELECT created_at FROM sessions WHERE machine_fingerprint = ? AND created_at >= ? ORDER BY created_at",
        (machine_fingerprint, since),
    )
    return [row["created_at"] for row in rows]
