"""SQLite storage of task states: one row per task, the state as a JSON column, atomic updates.

`update(task_id, fn)` reads, applies and writes inside one `BEGIN IMMEDIATE` transaction, so two
actors updating the same task serialize instead of losing a write; `version` counts the writes.
A file that is not SQLite, or a damaged one, raises `StateDatabaseError` naming the file.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from actors.state.model import State, as_state
from trajforge.errors import TrajforgeError

BUSY_TIMEOUT_S = 30.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS states (
    task_id    TEXT PRIMARY KEY,
    state      TEXT NOT NULL CHECK (json_valid(state)),
    version    INTEGER NOT NULL,
    updated_at REAL NOT NULL
)
"""


class StateDatabaseError(TrajforgeError, sqlite3.DatabaseError):
    """The state database cannot be used: not an SQLite file (`damaged` False) or a damaged one (`damaged` True)."""

    def __init__(self, path: Path, exc: sqlite3.DatabaseError):
        self.damaged = getattr(exc, "sqlite_errorname", "") == "SQLITE_CORRUPT"
        what = "a damaged SQLite database" if self.damaged else "not a state database"
        super().__init__(f"{path} is {what} ({exc})")
        self.path = path


def check_task_id(task_id: object) -> str:
    """A task id as the store keys it: a non-empty string (SQLite would keep None as a row of its own per save, and
    5 and "5" as one row); ValueError otherwise."""
    if not isinstance(task_id, str) or not task_id:
        raise ValueError(f"a task id is a non-empty string, not {task_id!r}")
    return task_id


def is_damage(exc: BaseException) -> bool:
    """A database error that says what the file is (not SQLite, or damaged), as opposed to a lock or a full disk."""
    return getattr(exc, "sqlite_errorname", "") in ("SQLITE_CORRUPT", "SQLITE_NOTADB")


class StateStore:
    """The states in the SQLite file at `path`, created on first use; `read_only` opens an existing one
    without changing it (sqlite3.Error when the file is not a state database; StateDatabaseError, naming the
    file, when it is not SQLite or is damaged)."""

    def __init__(self, path: str | Path, read_only: bool = False):
        self.path = Path(path)
        self.read_only = read_only
        self._local = threading.local()
        with self._damage_named():
            if read_only:
                if not self._read("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'states'"):
                    raise sqlite3.DatabaseError("it holds no states table")
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._transaction() as db:
                db.execute(SCHEMA)

    @contextmanager
    def _damage_named(self) -> Iterator[None]:
        """SQLite's errors for a file that is not a database, or a damaged one, as StateDatabaseError naming the file."""
        try:
            yield
        except StateDatabaseError:
            raise
        except sqlite3.DatabaseError as exc:
            if is_damage(exc):
                raise StateDatabaseError(self.path, exc) from None
            raise

    def _read(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._damage_named():
            return self._connection().execute(sql, params).fetchall()

    def _connection(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            if self.read_only:
                db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            else:
                db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
                _write_ahead_log(db)
                db.execute("PRAGMA synchronous=FULL")
            self._local.db = db
        return db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def load(self, task_id: str) -> State:
        """The task's state, or an empty one for a task never saved."""
        rows = self._read("SELECT state FROM states WHERE task_id = ?", (check_task_id(task_id),))
        return State.model_validate_json(rows[0][0]) if rows else State()

    def version(self, task_id: str) -> int:
        rows = self._read("SELECT version FROM states WHERE task_id = ?", (check_task_id(task_id),))
        return rows[0][0] if rows else 0

    def save(self, task_id: str, state: State | Mapping[str, Any] | str) -> int:
        """Write the state (a State, or a dict or JSON text checked against it: a pydantic error names a bad field); returns
        its new version."""
        state = as_state(state)
        return self.update(task_id, lambda _: state)

    def update(self, task_id: str, change: Callable[[State], State]) -> int:
        """Atomically replace the state with `change(current)`; returns the new version."""
        check_task_id(task_id)
        with self._damage_named(), self._transaction() as db:
            row = db.execute("SELECT state, version FROM states WHERE task_id = ?", (task_id,)).fetchone()
            current = State.model_validate_json(row[0]) if row else State()
            new = State.model_validate(change(current).model_dump())
            version = (row[1] if row else 0) + 1
            db.execute("INSERT INTO states (task_id, state, version, updated_at) VALUES (?, ?, ?, ?) "
                       "ON CONFLICT(task_id) DO UPDATE SET state = excluded.state, version = excluded.version, updated_at = excluded.updated_at",
                       (task_id, new.model_dump_json(), version, time.time()))
        return version

    def tasks(self) -> list[str]:
        """The task ids that have a state (as text: a database written before ids were checked may hold a 5 or a blob)."""
        return [str(row[0]) for row in self._read("SELECT CAST(task_id AS TEXT) FROM states WHERE task_id IS NOT NULL ORDER BY task_id")]

    def dump(self, task_id: str) -> dict:
        rows = self._read("SELECT state, version, updated_at FROM states WHERE task_id = ?", (check_task_id(task_id),))
        if not rows:
            raise KeyError(task_id)
        state, version, updated_at = rows[0]
        return {"task_id": task_id, "version": version, "updated_at": updated_at, "state": json.loads(state)}


def _write_ahead_log(db: sqlite3.Connection) -> None:
    """Switch the file to WAL mode. Switching a new file needs it to itself, and SQLite answers "database is locked"
    at once instead of waiting out the busy timeout, so several actors opening a new lake together retry here."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorname", "") != "SQLITE_BUSY" or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


_default_stores: dict[Path, StateStore] = {}


def default_store() -> StateStore:
    """The store of the actors' settings (`actors.state_db`, under `actors.lake`), one per database per process."""
    from actors.settings import load_actor_settings

    path = load_actor_settings().state_db.resolve()
    if path not in _default_stores:
        _default_stores[path] = StateStore(path)
    return _default_stores[path]


def load(task_id: str) -> State:
    """The specification's `load(task_id) -> State`, from the default store (an empty State for a new task)."""
    return default_store().load(task_id)


def save(task_id: str, state: State | Mapping[str, Any]) -> int:
    """The specification's `save(task_id, state)`, to the default store; returns the state's new version."""
    return default_store().save(task_id, state)
