"""Provenance events (seed 003): appended durably to the raw lake, indexed in SQLite for the queries.

Each event is one JSON line `{"event_id", "event_type", "customer_id", "token_id", "received_at", "client", "event"}`
in `lake/raw/provenance/customer=<customer>/date=<received UTC date>/<writer>.jsonl` (`event` as sent, less the fields outside its contract unless `keep_unknown_fields`),
fsync'd before the 201. The lines are the truth; `registry/provenance.db` indexes them: the events, their artifact
links (repo, branch, commit, one row per file written) and, per raw file, the offset up to which it is indexed.
A request's lines are written and indexed in one `BEGIN IMMEDIATE` transaction that also advances the offset, so a
line that reached the disk but not the index (a crash between the two) is indexed at the next start, or before the
next append to its file; a torn last line (a killed writer) is never indexed and no later write extends it.
"""

from __future__ import annotations

import json
import string
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

from serve_apps.ingest import registry
from serve_apps.ingest.events import Appends
from trajforge.contracts.events import partition_name
from trajforge.contracts.provenance import AGENT_ACTION, OUTCOME, PRICES_USD, AgentAction, Outcome, ProvenanceEvent, iso, parse_provenance
from trajforge.lake import Lake

SCHEMA = """
CREATE TABLE IF NOT EXISTS prov_events (
    event_id TEXT PRIMARY KEY,
    event_type TEXT NOT NULL,              -- agent_action | outcome
    customer_id TEXT NOT NULL,
    token_id TEXT,
    actor_type TEXT, actor_id TEXT, tool TEXT, intent TEXT, model TEXT,
    files_written TEXT,                    -- JSON array
    repo TEXT, branch TEXT, commit_sha TEXT, diff_hash TEXT,
    original_event_id TEXT, status TEXT, linked_commit TEXT,
    ts REAL NOT NULL,                      -- the event's timestamp; when it was received if it gave none
    received_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS prov_by_time ON prov_events (customer_id, ts);
CREATE INDEX IF NOT EXISTS prov_by_actor ON prov_events (customer_id, actor_id, ts);
CREATE INDEX IF NOT EXISTS prov_by_commit ON prov_events (commit_sha);
CREATE INDEX IF NOT EXISTS prov_by_linked_commit ON prov_events (linked_commit);
CREATE INDEX IF NOT EXISTS prov_by_commit_sha ON prov_events (lower(commit_sha));
CREATE INDEX IF NOT EXISTS prov_by_linked_sha ON prov_events (lower(linked_commit));
CREATE INDEX IF NOT EXISTS prov_by_original ON prov_events (original_event_id);
CREATE INDEX IF NOT EXISTS prov_by_token ON prov_events (token_id, ts);
CREATE TABLE IF NOT EXISTS artifact_links (
    event_id TEXT NOT NULL,
    repo TEXT NOT NULL,
    branch TEXT,
    commit_sha TEXT,
    file TEXT                              -- NULL for an action that wrote no file
);
CREATE INDEX IF NOT EXISTS links_by_file ON artifact_links (file, repo);
CREATE INDEX IF NOT EXISTS links_by_event ON artifact_links (event_id);
CREATE TABLE IF NOT EXISTS indexed_files (
    path TEXT PRIMARY KEY,                 -- relative to the lake root
    offset INTEGER NOT NULL                -- bytes of the file that are indexed (always at a line's end)
);
"""
MIN_ABBREV = 4  # git's shortest abbreviated SHA
SEARCH_FILTERS = ("event_type", "actor_type", "actor_id", "tool", "model", "repo", "branch")


class UnknownEvent(LookupError):
    """An outcome names an event that is not an agent_action of this customer."""


class ProvenanceStore:
    def __init__(self, lake: Lake, writer_id: str):
        self.lake, self.writer_id = lake, writer_id
        self._lock = threading.Lock()
        self._conn = registry.connect(lake.provenance_db)
        self._conn.executescript(SCHEMA)
        self.recovered = self.recover()

    # ---- writing ---------------------------------------------------------------------------------

    def store(self, events: list[tuple[ProvenanceEvent, dict[str, Any]]], customer_id: str, token_id: str | None,
              client: str, now: float | None = None) -> list[str]:
        """Append the events durably and index them; answers their new ids, in order. An outcome must name an
        agent_action (stored earlier, or earlier in this request) of the same customer."""
        now = time.time() if now is None else now
        folder = self.lake.raw_provenance / f"customer={partition_name(customer_id)}" / f"date={time.strftime('%Y-%m-%d', time.gmtime(now))}"
        path = folder / f"{self.writer_id}.jsonl"
        with self._lock:
            appends = Appends()
            try:
                return self._store(events, customer_id, token_id, client, now, path, appends)
            except BaseException:
                appends.undo()  # answered as not stored: its lines must not be indexed by the next catch-up
                raise

    def _store(self, events: list, customer_id: str, token_id: str | None, client: str, now: float, path: Path, appends: Appends) -> list[str]:
        with registry.immediate(self._conn) as conn:
            self._catch_up(conn, path)
            ids, records, batch = [], [], {}
            for event, raw in events:
                event_id = str(uuid.uuid4())
                if isinstance(event, Outcome):
                    self._check_original(conn, event.original_event_id, customer_id, batch)
                batch[event_id] = customer_id if isinstance(event, AgentAction) else None
                record = {"event_id": event_id, "event_type": event.event_type, "customer_id": customer_id, "token_id": token_id,
                          "received_at": now, "client": client, "event": raw}
                records.append(record)
                ids.append(event_id)
            appends.append(path, b"".join(_line(record) for record in records))
            for record, (event, _) in zip(records, events):
                _index(conn, record, event)
            self._set_offset(conn, path, path.stat().st_size)
        return ids

    @staticmethod
    def _check_original(conn, original: str, customer_id: str, batch: dict[str, str | None]) -> None:
        if original in batch:
            owner = batch[original]
        else:
            row = conn.execute("SELECT customer_id FROM prov_events WHERE event_id = ? AND event_type = ?", (original, AGENT_ACTION)).fetchone()
            owner = row["customer_id"] if row else None
        if owner != customer_id:
            raise UnknownEvent(f"original_event_id {original!r} is not an agent_action event of customer {customer_id!r}")

    # ---- recovery --------------------------------------------------------------------------------

    def recover(self) -> int:
        """Index every complete line of the raw files past their indexed offsets (at start); answers how many."""
        count = 0
        if not self.lake.raw_provenance.is_dir():
            return 0
        with self._lock:
            for path in sorted(self.lake.raw_provenance.glob("customer=*/date=*/*.jsonl")):
                with registry.immediate(self._conn) as conn:
                    count += self._catch_up(conn, path)
        return count

    def _catch_up(self, conn, path: Path) -> int:
        """Index the complete lines of `path` past its indexed offset; answers how many were new."""
        if not path.exists():
            return 0
        key = str(path.relative_to(self.lake.root))
        row = conn.execute("SELECT offset FROM indexed_files WHERE path = ?", (key,)).fetchone()
        offset = row["offset"] if row else 0
        if path.stat().st_size <= offset:
            return 0
        with path.open("rb") as handle:
            handle.seek(offset)
            data = handle.read()
        end = data.rfind(b"\n") + 1  # a torn last line (no newline) is left unindexed
        count = 0
        for line in data[:end].splitlines():
            try:
                record = json.loads(line)
                event = parse_provenance(record["event"])
            except (ValueError, KeyError, TypeError):
                continue  # not a line this store wrote; the raw file keeps it
            count += _index(conn, record, event)
        self._set_offset(conn, path, offset + end)
        return count

    def _set_offset(self, conn, path: Path, offset: int) -> None:
        conn.execute("INSERT INTO indexed_files (path, offset) VALUES (?, ?) ON CONFLICT (path) DO UPDATE SET offset = excluded.offset",
                     (str(path.relative_to(self.lake.root)), offset))

    # ---- queries ---------------------------------------------------------------------------------

    def by_commit(self, customer_id: str, commit: str, limit: int = 1000, offset: int = 0) -> list[dict[str, Any]]:
        """The agent actions of `commit`: at it, or linked to it by an outcome's linked_commit; newest first. A hex
        commit matches as git names one: a short SHA (4 or more digits) finds the full one, case aside, and a full
        SHA finds an event that gave its short form."""
        at, at_args = commit_match("commit_sha", commit)
        landed, landed_args = commit_match("linked_commit", commit)
        linked = f"SELECT original_event_id FROM prov_events WHERE customer_id = ? AND event_type = 'outcome' AND {landed}"
        with self._lock:
            rows = self._conn.execute(
                f"SELECT event_id, {at} AS at_commit, event_id IN ({linked}) AS by_outcome FROM prov_events"
                f" WHERE customer_id = ? AND event_type = 'agent_action' AND ({at} OR event_id IN ({linked}))"
                " ORDER BY ts DESC, rowid DESC LIMIT ? OFFSET ?",
                (*at_args, customer_id, *landed_args, customer_id, *at_args, customer_id, *landed_args, limit, offset)).fetchall()
            events = self._events([row["event_id"] for row in rows])
        flags = {row["event_id"]: (("commit", row["at_commit"]), ("outcome", row["by_outcome"])) for row in rows}
        for event in events:
            event["linked_by"] = [name for name, flag in flags[event["event_id"]] if flag]
        return events

    def by_file(self, customer_id: str, file: str, repo: str | None, limit: int = 1000, offset: int = 0) -> list[dict[str, Any]]:
        """The agent actions that wrote `file` (in `repo`, when given); newest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT event_id FROM prov_events WHERE customer_id = ? AND event_id IN"
                " (SELECT event_id FROM artifact_links WHERE file = ? AND (? IS NULL OR repo = ?))"
                " ORDER BY ts DESC, rowid DESC LIMIT ? OFFSET ?", (customer_id, file, repo, repo, limit, offset)).fetchall()
            return self._events([row["event_id"] for row in rows])

    def search(self, customer_id: str, filters: dict[str, str], since: float | None, until: float | None,
               intent: str | None, limit: int, offset: int) -> list[dict[str, Any]]:
        """Events of the customer matching every filter given (exact, `intent` as a substring), newest first."""
        clauses, args = ["customer_id = ?"], [customer_id]
        for name in SEARCH_FILTERS:
            if filters.get(name) is not None:
                clauses.append(f"{name} = ?")
                args.append(filters[name])
        if filters.get("commit") is not None:
            (at, at_args), (landed, landed_args) = (commit_match(column, filters["commit"]) for column in ("commit_sha", "linked_commit"))
            clauses.append(f"({at} OR {landed})")
            args += [*at_args, *landed_args]
        if since is not None:
            clauses.append("ts >= ?")
            args.append(since)
        if until is not None:
            clauses.append("ts <= ?")
            args.append(until)
        if intent:
            clauses.append("instr(lower(intent), lower(?)) > 0")
            args.append(intent)
        with self._lock:
            rows = self._conn.execute(f"SELECT event_id FROM prov_events WHERE {' AND '.join(clauses)} ORDER BY ts DESC, rowid DESC"
                                      " LIMIT ? OFFSET ?", (*args, limit, offset)).fetchall()
            return self._events([row["event_id"] for row in rows])

    def _events(self, event_ids: list[str]) -> list[dict[str, Any]]:
        """The events as the API shows them (agent actions with their outcomes), newest first."""
        if not event_ids:
            return []
        marks = ",".join("?" * len(event_ids))
        rows = self._conn.execute(f"SELECT * FROM prov_events WHERE event_id IN ({marks}) ORDER BY ts DESC, rowid DESC", event_ids).fetchall()
        outcomes: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in self._conn.execute(f"SELECT * FROM prov_events WHERE event_type = 'outcome' AND original_event_id IN ({marks})"
                                      " ORDER BY received_at, rowid", event_ids):
            outcomes[row["original_event_id"]].append(_shown(row))
        shown = [_shown(row) for row in rows]
        for event in shown:
            if event["event_type"] == AGENT_ACTION:
                event["outcomes"] = outcomes.get(event["event_id"], [])
                event["status"] = event["outcomes"][-1]["status"] if event["outcomes"] else None
        return shown

    def counts(self, customer_id: str | None = None) -> dict[str, int]:
        """Events per token (of one customer, or all)."""
        query = "SELECT token_id, COUNT(*) AS n FROM prov_events" + (" WHERE customer_id = ?" if customer_id else "") + " GROUP BY token_id"
        with self._lock:
            return {row["token_id"]: row["n"] for row in self._conn.execute(query, (customer_id,) if customer_id else ())}

    def usage(self, token_id: str, months: int = 12, files: int = 10, recent: int = 10) -> dict[str, Any]:
        """One user's (token's) usage, as seed 003's user profile shows it: totals and active days (by the events'
        timestamps), the monthly breakdown of what was billed with its cost (by month received, at the seed's prices),
        the files its actions wrote most often and its latest events with their status."""
        with self._lock:
            totals = self._conn.execute(
                "SELECT COUNT(*) AS n, SUM(event_type = 'agent_action') AS actions, SUM(event_type = 'outcome') AS outcomes,"
                " COUNT(DISTINCT date(ts, 'unixepoch')) AS days, MIN(ts) AS first, MAX(ts) AS last FROM prov_events WHERE token_id = ?",
                (token_id,)).fetchone()
            monthly = self._conn.execute(
                "SELECT strftime('%Y-%m', received_at, 'unixepoch') AS month, COUNT(*) AS n, SUM(event_type = 'agent_action') AS actions,"
                " SUM(event_type = 'outcome') AS outcomes FROM prov_events WHERE token_id = ? GROUP BY month ORDER BY month DESC LIMIT ?",
                (token_id, months)).fetchall()
            written = self._conn.execute(
                "SELECT link.file AS file, link.repo AS repo, COUNT(*) AS n, MAX(event.ts) AS last FROM artifact_links AS link"
                " JOIN prov_events AS event ON event.event_id = link.event_id WHERE event.token_id = ? AND link.file IS NOT NULL"
                " GROUP BY link.file, link.repo ORDER BY n DESC, last DESC, link.file LIMIT ?", (token_id, files)).fetchall()
            latest = self._conn.execute("SELECT event_id FROM prov_events WHERE token_id = ? ORDER BY ts DESC, rowid DESC LIMIT ?",
                                        (token_id, recent)).fetchall()
            events = self._events([row["event_id"] for row in latest])

        def cost(actions: int | None, outcomes: int | None) -> float:
            return round((actions or 0) * PRICES_USD[AGENT_ACTION] + (outcomes or 0) * PRICES_USD[OUTCOME], 6)

        return {
            "total_events": totals["n"], "agent_actions": totals["actions"] or 0, "outcomes": totals["outcomes"] or 0,
            "active_days": totals["days"], "first_activity": iso(totals["first"]) if totals["n"] else None,
            "last_activity": iso(totals["last"]) if totals["n"] else None, "total_cost_usd": cost(totals["actions"], totals["outcomes"]),
            "monthly": [{"month": row["month"], "event_count": row["n"], "agent_actions": row["actions"], "outcomes": row["outcomes"],
                         "cost_usd": cost(row["actions"], row["outcomes"])} for row in monthly],
            "files": [{"file_path": row["file"], "repo": row["repo"], "modification_count": row["n"], "last_modified": iso(row["last"])}
                      for row in written],
            "recent_events": events,
        }

    def close(self) -> None:
        self._conn.close()


def commit_match(column: str, commit: str) -> tuple[str, list[Any]]:
    """SQL (and its arguments) for `column` naming `commit`: the same text, or, for a hex commit of 4 or more digits,
    the same SHA as git abbreviates it (either one a prefix of the other, whatever the case). Both halves use the
    index on `lower(column)`: a prefix of the query is one of a few strings, and a longer SHA sorts between `commit`
    and `commit + "g"`."""
    if not (MIN_ABBREV <= len(commit) <= 64 and all(c in string.hexdigits for c in commit)):
        return f"{column} = ?", [commit]
    short = commit.lower()
    prefixes = [short[:end] for end in range(MIN_ABBREV, len(short) + 1)]
    return (f"({column} = ? OR lower({column}) IN ({','.join('?' * len(prefixes))}) OR (lower({column}) > ? AND lower({column}) < ?))",
            [commit, *prefixes, short, short + "g"])


def _line(record: dict[str, Any]) -> bytes:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def _index(conn, record: dict[str, Any], event: ProvenanceEvent) -> int:
    """Index one raw record (once: a record already indexed is left as it is); answers 1 if it was new."""
    event_id, received_at = record["event_id"], record["received_at"]
    if isinstance(event, AgentAction):
        ts = event.timestamp.timestamp() if event.timestamp else received_at
        values = (event.actor_type, event.actor_id, event.tool, event.intent, event.model, json.dumps(event.files_written),
                  event.repo, event.branch, event.commit, event.diff_hash, None, None, None)
    else:
        ts = received_at
        values = (None,) * 10 + (event.original_event_id, event.status, event.linked_commit)
    cursor = conn.execute(
        "INSERT OR IGNORE INTO prov_events (event_id, event_type, customer_id, token_id, actor_type, actor_id, tool, intent, model,"
        " files_written, repo, branch, commit_sha, diff_hash, original_event_id, status, linked_commit, ts, received_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (event_id, event.event_type, record["customer_id"], record.get("token_id"), *values, ts, received_at))
    if cursor.rowcount and isinstance(event, AgentAction):
        conn.executemany("INSERT INTO artifact_links (event_id, repo, branch, commit_sha, file) VALUES (?, ?, ?, ?, ?)",
                         [(event_id, event.repo, event.branch, event.commit, file) for file in (event.files_written or [None])])
    return cursor.rowcount


def _shown(row) -> dict[str, Any]:
    base = {"id": row["event_id"], "event_id": row["event_id"], "event_type": row["event_type"], "customer_id": row["customer_id"]}
    if row["event_type"] == OUTCOME:
        return {**base, "original_event_id": row["original_event_id"], "status": row["status"], "linked_commit": row["linked_commit"],
                "timestamp": iso(row["ts"]), "received_at": iso(row["received_at"])}
    return {**base, "actor_type": row["actor_type"], "actor_id": row["actor_id"], "tool": row["tool"], "intent": row["intent"],
            "model": row["model"], "files_written": json.loads(row["files_written"] or "[]"), "repo": row["repo"], "branch": row["branch"],
            "commit": row["commit_sha"], "diff_hash": row["diff_hash"], "timestamp": iso(row["ts"]), "received_at": iso(row["received_at"])}

