"""`POST /v1/events`: Starcode telemetry events (seed 000), gated by `x-company-api-key`, kept as JSON lines.

Each accepted event is one line `{"event_id", "event_type", "org_id", "session_id", "received_at", "client", "event"}`
in `lake/raw/events/org=<org>/date=<received UTC date>/type=<event type>/<writer>.jsonl`, where
`event` is the event exactly as sent. A writer (one replica process) appends to files of its own and
fsyncs them before the 200, so a killed replica loses at most an unacknowledged line at a file's end,
which readers skip (`trajforge.trajectories` reads the same way) and no later write extends.

Deduplication: the ids of stored events are kept in `registry/events.db`. A request's new events are
written and fsync'd inside one `BEGIN IMMEDIATE` transaction, which serializes replicas, and their ids
are committed after the data is durable. A crash between the two leaves events a retry stores again;
the build keeps one event per (org, event_id), so they are never counted twice downstream.
"""

from __future__ import annotations

import hmac
import json
import os
import threading
import time
from collections import defaultdict
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serve_apps.ingest import registry
from trajforge.contracts.events import DEFAULT_ORG, TelemetryEvent, event_id_of, partition_name
from trajforge.lake import Lake
from trajforge.raw_segments import append_whole

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    org TEXT NOT NULL,
    event_id TEXT NOT NULL,
    received_at REAL NOT NULL,
    PRIMARY KEY (org, event_id)
) WITHOUT ROWID;
"""
API_KEY_HEADER = "x-company-api-key"


def api_keys(configured: list[str], env_name: str | None, environ: Mapping[str, str] | None = None) -> list[str]:
    """The keys `POST /v1/events` accepts: the configured ones and the comma-separated list in `env_name`."""
    environ = os.environ if environ is None else environ
    from_env = environ.get(env_name, "") if env_name else ""
    return list(dict.fromkeys(key for key in (*configured, *(part.strip() for part in from_env.split(","))) if key))


def key_accepted(given: str | None, keys: list[str]) -> bool:
    """Whether `given` is one of `keys`, compared in constant time; with no keys configured, any request passes."""
    if not keys:
        return True
    if not given:
        return False
    presented = given.encode()
    return any(hmac.compare_digest(presented, key.encode()) for key in keys)


@dataclass(frozen=True)
class Accepted:
    event_id: str
    duplicate: bool


class EventStore:
    """Appends events to this writer's JSON-lines files and remembers their ids; safe from many threads."""

    def __init__(self, lake: Lake, writer_id: str):
        self.lake = lake
        self.writer_id = writer_id
        self._lock = threading.Lock()
        self._conn = registry.connect(lake.events_db)
        self._conn.executescript(SCHEMA)

    def store(self, events: list[tuple[TelemetryEvent, dict[str, Any]]], client: str, now: float | None = None) -> list[Accepted]:
        """Store the events that are new (by org and id) and answer for each, in order."""
        now = time.time() if now is None else now
        date = time.strftime("%Y-%m-%d", time.gmtime(now))
        keyed = [((event.org_id or DEFAULT_ORG), event_id_of(event, raw), event, raw) for event, raw in events]
        with self._lock:
            appends = Appends()
            try:
                return self._store(keyed, client, now, date, appends)
            except BaseException:
                appends.undo()
                raise

    def _store(self, keyed: list, client: str, now: float, date: str, appends: Appends) -> list[Accepted]:
        with registry.immediate(self._conn) as conn:
            seen = self._stored(conn, {(org, event_id) for org, event_id, _, _ in keyed})
            lines: dict[Path, list[bytes]] = defaultdict(list)
            answers = []
            for org, event_id, event, raw in keyed:
                if (org, event_id) in seen:
                    answers.append(Accepted(event_id, duplicate=True))
                    continue
                seen.add((org, event_id))
                record = {"event_id": event_id, "event_type": event.event_type, "org_id": org, "session_id": event.session_id,
                          "received_at": now, "client": client, "event": raw}
                folder = self.lake.raw_events / f"org={partition_name(org)}" / f"date={date}" / f"type={event.event_type}"
                lines[folder / f"{self.writer_id}.jsonl"].append(json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode() + b"\n")
                answers.append(Accepted(event_id, duplicate=False))
            for path, chunk in lines.items():
                appends.append(path, b"".join(chunk))
            conn.executemany("INSERT INTO events (org, event_id, received_at) VALUES (?, ?, ?)",
                             [(org, answer.event_id, now) for (org, *_), answer in zip(keyed, answers) if not answer.duplicate])
        return answers

    @staticmethod
    def _stored(conn, keys: set[tuple[str, str]]) -> set[tuple[str, str]]:
        found: set[tuple[str, str]] = set()
        pairs = list(keys)
        for start in range(0, len(pairs), 400):  # SQLite's bound-parameter limit, two per pair
            part = pairs[start : start + 400]
            clause = " OR ".join("(org = ? AND event_id = ?)" for _ in part)
            found.update((row[0], row[1]) for row in conn.execute(f"SELECT org, event_id FROM events WHERE {clause}",
                                                                  [value for pair in part for value in pair]))
        return found

    def close(self) -> None:
        self._conn.close()


class Appends:
    """The durable appends one request makes, to cut back off when its registry transaction fails (a full disk): a
    request answered as not stored leaves no line that a later index catch-up, a retry or a build would take as well.
    Use it under the writer's lock, so that no other request appends to these files in between."""

    def __init__(self) -> None:
        self.sizes: dict[Path, int] = {}

    def append(self, path: Path, data: bytes) -> None:
        self.sizes.setdefault(path, path.stat().st_size if path.exists() else 0)
        append_durably(path, data)

    def undo(self) -> None:
        for path, size in self.sizes.items():
            with suppress(OSError):
                fd = os.open(path, os.O_WRONLY)
                try:
                    os.ftruncate(fd, size)
                    os.fsync(fd)
                finally:
                    os.close(fd)


def append_durably(path: Path, data: bytes) -> None:
    """Append and fsync. A failed write is cut back off (no half line for the next append to extend). When the
    file or its folders are new, the folders holding the new entries are fsync'd too, so acknowledged data
    cannot vanish with an entry that never reached the disk."""
    new_entries = [entry for entry in (path, *path.parents) if not entry.exists()]
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        append_whole(fd, data)
    finally:
        os.close(fd)
    for folder in {entry.parent for entry in new_entries}:
        handle = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)
