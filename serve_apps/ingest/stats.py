"""CentralStats (seed 004): aggregates over the registry, the ledger and the raw store."""

from __future__ import annotations

import sqlite3
import time
from datetime import datetime, timedelta, timezone
from typing import Any

class Stats:
    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn

    def _one(self, query: str, args: tuple = ()) -> Any:
        return self._conn.execute(query, args).fetchone()[0]

    def storage_bytes(self) -> int:
        """Bytes of acknowledged data in the raw segments (their committed offsets)."""
        return self._one("SELECT COALESCE(SUM(committed_offset), 0) FROM segments")

    def summary(self) -> dict[str, Any]:
        return {
            "totalEnvelopes": self._one("SELECT COUNT(*) FROM envelopes"),
            "totalSteps": self._one("SELECT COALESCE(SUM(steps), 0) FROM envelopes"),
            "totalSessions": self._one("SELECT COUNT(*) FROM sessions"),
            "activeSessions": self._one("SELECT COUNT(*) FROM sessions WHERE status = 'active'"),
            "uniqueContributors": self._one("SELECT COUNT(DISTINCT contributor_id) FROM sessions WHERE contributor_id IS NOT NULL"),
            "storageSizeMb": round(self.storage_bytes() / 1e6, 6),
            "totalPointsAwarded": self._one("SELECT COALESCE(SUM(points), 0) FROM credits"),
        }

    def daily(self, days: int, now: float | None = None) -> list[dict[str, Any]]:
        now = time.time() if now is None else now
        today = datetime.fromtimestamp(now, timezone.utc).date()
        first = today - timedelta(days=days - 1)
        since = datetime(first.year, first.month, first.day, tzinfo=timezone.utc).timestamp()
        rows: dict[str, dict[str, Any]] = {
            (first + timedelta(days=offset)).isoformat(): {"date": (first + timedelta(days=offset)).isoformat(), "envelopes": 0, "steps": 0, "sessions": 0, "points": 0}
            for offset in range(days)
        }
        # Only the asked days: a row stamped after today (clock skew between replicas) belongs to none of them.
        window, until = "{0} >= ? AND {0} < ?", since + days * 86400
        day = "strftime('%Y-%m-%d', {}, 'unixepoch')"
        for date, envelopes, steps in self._conn.execute(
            f"SELECT {day.format('received_at')}, COUNT(*), SUM(steps) FROM envelopes WHERE {window.format('received_at')} GROUP BY 1", (since, until)
        ):
            rows[date].update(envelopes=envelopes, steps=steps)
        for date, sessions in self._conn.execute(
            f"SELECT {day.format('created_at')}, COUNT(*) FROM sessions WHERE {window.format('created_at')} GROUP BY 1", (since, until)
        ):
            rows[date]["sessions"] = sessions
        for date, points in self._conn.execute(
            f"SELECT {day.format('created_at')}, SUM(points) FROM credits WHERE {window.format('created_at')} GROUP BY 1", (since, until)
        ):
            rows[date]["points"] = points
        return [rows[date] for date in sorted(rows)]

    def _breakdown(self, column: str) -> dict[str, dict[str, Any]]:
        query = (
            f"SELECT s.{column} AS key, COUNT(*) AS sessions, SUM(s.step_count) AS steps, COALESCE(SUM(c.points), 0) AS points"
            " FROM sessions s LEFT JOIN credits c USING (session_id) GROUP BY s." + column + " ORDER BY sessions DESC, key"
        )
        return {row["key"]: {"sessions": row["sessions"], "steps": row["steps"], "points": row["points"]} for row in self._conn.execute(query)}

    def models(self) -> dict[str, dict[str, Any]]:
        breakdown = self._breakdown("model")
        total = sum(entry["sessions"] for entry in breakdown.values()) or 1
        for entry in breakdown.values():
            entry["percentage"] = round(100.0 * entry["sessions"] / total, 1)
        return breakdown

    def providers(self) -> dict[str, dict[str, Any]]:
        return self._breakdown("provider")

    def leaderboard(self, limit: int) -> list[dict[str, Any]]:
        rows = self._conn.execute(
            "SELECT contributor_id, total_points, total_sessions FROM balances ORDER BY total_points DESC, contributor_id LIMIT ?", (limit,)
        )
        return [{"contributor_id": row[0][:8], "total_points": row[1], "total_sessions": row[2]} for row in rows]

