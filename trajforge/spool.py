"""The client's durable outbox: signed envelopes wait here (SQLite, fsync'd) until the service takes them.

Envelopes leave in the order they were signed, so a session's sequences reach the server in order
even across an offline period or a restart of the agent. A spool file that is not a readable SQLite database
(damaged on disk, or another file at that path) is moved aside to `<name>.corrupt-<time>` with a logged error, and a
fresh spool takes its place: the client keeps working, and what the old file held is kept for inspection. A spool
that cannot be opened or written for another reason (a full disk, an I/O error, a lock) is not damaged: it is left as it
is and the error raised (`StorageFull`, naming the file, when the disk is full), so that nothing spooled goes aside.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from trajforge.storage_full import StorageFull, out_of_space, space_left, storage_full

log = logging.getLogger("trajforge.client")
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, session_id TEXT NOT NULL,"
    " body BLOB NOT NULL, created_at REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS rejected (id INTEGER PRIMARY KEY, session_id TEXT NOT NULL, body BLOB NOT NULL,"
    " status INTEGER NOT NULL, answer TEXT NOT NULL, rejected_at REAL NOT NULL)",
)
_DAMAGE_CODES = frozenset({11, 26})  # SQLITE_CORRUPT, SQLITE_NOTADB: the file itself is not a sound database


class SpoolFull(RuntimeError):
    """Envelopes not spooled because the spool would hold more than its capacity; nothing in it was dropped."""

    def __init__(self, pending: int, capacity: int, refused: int):
        super().__init__(f"the spool holds {pending} envelopes of at most {capacity}: {refused} more not spooled")
        self.pending, self.capacity, self.refused = pending, capacity, refused


@dataclass(frozen=True)
class Spooled:
    id: int
    session_id: str
    body: bytes


def _connect(path: str | Path) -> sqlite3.Connection:
    if str(path) != ":memory:" and not Path(path).exists():
        # The spool holds trajectory and telemetry text: readable by its owner only. SQLite gives its -wal and -shm
        # files the database file's mode.
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        for statement in _SCHEMA:
            conn.execute(statement)
        if str(path) != ":memory:" and (check := conn.execute("PRAGMA quick_check").fetchone()[0]) != "ok":
            raise sqlite3.DatabaseError(f"quick_check: {check}")
    except sqlite3.DatabaseError:
        conn.close()
        raise
    return conn


def _damaged(exc: sqlite3.DatabaseError) -> bool:
    return (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF in _DAMAGE_CODES or str(exc).startswith("quick_check:")


def _full(exc: sqlite3.Error, path: str | Path) -> bool:
    return storage_full(exc) if str(path) == ":memory:" else out_of_space(exc, path)  # SQLite may say only "disk I/O error"


def _full_error(path: str | Path, doing: str, exc: BaseException) -> StorageFull:
    then = "open it again" if doing == "open" else "try again (what this call was spooling was not taken)"
    return StorageFull(f"no space left to {doing} the spool {path} ({space_left(Path(path).parent)}; {exc}): nothing already "
                       f"spooled was lost or moved; free space, then {then}", path)


def _set_aside(path: Path, problem: Exception) -> Path:
    """Move a damaged spool (and its WAL and shared-memory files) aside; the name it now has."""
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{time.time_ns() % 10**9}")
    for suffix in ("", "-wal", "-shm"):
        part = Path(f"{path}{suffix}")
        if part.exists():
            part.rename(f"{aside}{suffix}")
    log.error("the spool %s is damaged (%s): moved aside to %s, starting an empty spool; envelopes it held were not sent",
              path, problem, aside)
    return aside


class Spool:
    def __init__(self, path: str | Path = ":memory:"):
        if str(path) != ":memory:":
            if Path(path).is_dir():  # never "damaged": moving a folder of someone's files aside is not ours to do
                raise IsADirectoryError(f"the spool path {path} is a directory; give a file's path, such as {Path(path) / 'spool.db'}")
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.set_aside: Path | None = None  # where a damaged spool file went, if one was found
        self._lock = threading.Lock()
        try:
            self._conn = _connect(path)
        except sqlite3.DatabaseError as exc:
            if _full(exc, path):
                raise _full_error(path, "open", exc) from exc
            if str(path) == ":memory:" or not _damaged(exc):
                raise
            self.set_aside = _set_aside(Path(path), exc)
            self._conn = _connect(path)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (one fsync), under the lock; rolled back if the body raises."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn
                    self._conn.execute("COMMIT")
                except BaseException:
                    if self._conn.in_transaction:  # a COMMIT that failed (a full disk) may have rolled back already
                        with suppress(sqlite3.Error):
                            self._conn.execute("ROLLBACK")
                    raise
            except sqlite3.OperationalError as exc:
                if _full(exc, self.path):
                    raise _full_error(self.path, "write", exc) from exc
                raise

    def put(self, session_id: str, body: bytes) -> int:
        return self.put_many(session_id, [body])[0]

    def put_many(self, session_id: str, bodies: list[bytes], capacity: int | None = None) -> list[int]:
        """Spool envelopes in one transaction, in this order; their ids. With `capacity`, all or none: SpoolFull when
        the spool would then hold more than that many (counted in the transaction, so processes sharing it agree)."""
        now = time.time()
        with self._write() as conn:
            if capacity is not None and (pending := conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]) + len(bodies) > capacity:
                raise SpoolFull(pending, capacity, len(bodies))
            return [conn.execute("INSERT INTO outbox (session_id, body, created_at) VALUES (?, ?, ?)", (session_id, body, now)).lastrowid
                    for body in bodies]

    def head(self, limit: int) -> list[Spooled]:
        with self._lock:
            rows = self._conn.execute("SELECT id, session_id, body FROM outbox ORDER BY id LIMIT ?", (limit,)).fetchall()
        return [Spooled(*row) for row in rows]

    def delivered(self, ids: list[int]) -> None:
        with self._write() as conn:
            conn.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])

    def reject(self, item: Spooled, status: int, answer: dict) -> None:
        """Move a permanently refused envelope aside (kept for inspection, never resent)."""
        with self._write() as conn:
            conn.execute(  # OR REPLACE: another process sharing this spool may have set it aside first
                "INSERT OR REPLACE INTO rejected (id, session_id, body, status, answer, rejected_at) VALUES (?, ?, ?, ?, ?, ?)",
                (item.id, item.session_id, item.body, status, json.dumps(answer), time.time()),
            )
            conn.execute("DELETE FROM outbox WHERE id = ?", (item.id,))

    def attempted(self, ids: list[int]) -> None:
        with self._write() as conn:
            conn.executemany("UPDATE outbox SET attempts = attempts + 1 WHERE id = ?", [(i,) for i in ids])

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
