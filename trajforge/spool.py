"""The client's durable outbox: signed envelopes wait here (SQLite, fsync'd) until the service takes them.

Envelopes leave in the order they were signed, so a session's sequences reach the server in order
even across an offline period or a restart of the agent.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Spooled:
    id: int
    session_id: str
    body: bytes


class Spool:
    def __init__(self, path: str | Path = ":memory:"):
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, session_id TEXT NOT NULL,"
            " body BLOB NOT NULL, created_at REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0)"
        )
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS rejected (id INTEGER PRIMARY KEY, session_id TEXT NOT NULL, body BLOB NOT NULL,"
            " status INTEGER NOT NULL, answer TEXT NOT NULL, rejected_at REAL NOT NULL)"
        )

    def put(self, session_id: str, body: bytes) -> int:
        with self._lock:
            return self._conn.execute(
                "INSERT INTO outbox (session_id, body, created_at) VALUES (?, ?, ?)", (session_id, body, time.time())
            ).lastrowid

    def head(self, limit: int) -> list[Spooled]:
        with self._lock:
            rows = self._conn.execute("SELECT id, session_id, body FROM outbox ORDER BY id LIMIT ?", (limit,)).fetchall()
        return [Spooled(*row) for row in rows]

    def delivered(self, ids: list[int]) -> None:
        with self._lock:
            self._conn.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])

    def reject(self, item: Spooled, status: int, answer: dict) -> None:
        """Move a permanently refused envelope aside (kept for inspection, never resent)."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.execute(
                "INSERT INTO rejected (id, session_id, body, status, answer, rejected_at) VALUES (?, ?, ?, ?, ?, ?)",
                (item.id, item.session_id, item.body, status, json.dumps(answer), time.time()),
            )
            self._conn.execute("DELETE FROM outbox WHERE id = ?", (item.id,))
            self._conn.execute("COMMIT")

    def attempted(self, ids: list[int]) -> None:
        with self._lock:
            self._conn.executemany("UPDATE outbox SET attempts = attempts + 1 WHERE id = ?", [(i,) for i in ids])

    def pending(self) -> int:
        with self._lock:
            return self._conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]

    def rejections(self) -> list[dict]:
        with self._lock:
            rows = self._conn.execute("SELECT id, session_id, status, answer FROM rejected ORDER BY id").fetchall()
        return [{"id": r[0], "session_id": r[1], "status": r[2], "answer": json.loads(r[3])} for r in rows]

    def close(self) -> None:
        with self._lock:
            self._conn.close()
