"""The contributor ledger: one credit per closed session, and running balances."""

from __future__ import annotations

import json
import sqlite3

from trajforge.scoring import Score

def credit(conn: sqlite3.Connection, contributor_id: str, session_id: str, score: Score, now: float) -> bool:
    """Credit a session once (inside the caller's transaction); False when it was already credited."""
    inserted = conn.execute(
        "INSERT OR IGNORE INTO credits (contributor_id, session_id, points, base_points, multiplier_breakdown, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (contributor_id, session_id, score.total_points, score.base_points, json.dumps(score.breakdown), now),
    ).rowcount
    if not inserted:
        return False
    conn.execute(
        "INSERT INTO balances (contributor_id, total_points, total_sessions, last_credit_at) VALUES (?, ?, 1, ?)"
        " ON CONFLICT (contributor_id) DO UPDATE SET total_points = total_points + excluded.total_points,"
        " total_sessions = total_sessions + 1, last_credit_at = excluded.last_credit_at",
        (contributor_id, score.total_points, now),
    )
    return True


def credit_of(conn: sqlite3.Connection, session_id: str) -> dict | None:
    row = conn.execute("SELECT points, base_points, multiplier_breakdown FROM credits WHERE session_id = ?", (session_id,)).fetchone()
    if row is None:
        return None
    return {"points": row["points"], "base_points": row["base_points"], "breakdown": json.loads(row["multiplier_breakdown"])}

