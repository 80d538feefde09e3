"""Provenance asked of a curated build instead of the running service (DESIGN: "DuckDB over the lake: provenance (by
commit, by file)"): the agent actions of a commit, of a file, or a search, from the build's `provenance` table, and the
training rows labelled with them, which only the build knows.

The answers have the provenance API's shape (seed 003: each action with its `outcomes`, newest first), so
`trajforge provenance` prints both the same way. A commit matches as the labels and the API match it
(`pipelines/build/provenance_labels.py`: the action's commit or an outcome's `linked_commit`, short SHAs as git
abbreviates them). The build is the lake operator's: every customer's actions, unless `customer` names one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pipelines.build.provenance_labels import Labeller, same_repo
from pipelines.lake_stats import connect
from trajforge.contracts.provenance import iso
from trajforge.errors import ConfigError

ROW_TABLES = {"sft": "example_id", "trajectories": "session_id", "behavior": "row_id"}
SAMPLE_ROWS = 5


# A superset of the actions a commit names (its commit or an outcome's linked_commit, one a prefix of the other, case aside),
# which the Labeller then narrows to the exact rule: the query reads only these rows, never the whole table.
COMMIT_NEAR = """(starts_with(lower("commit"), lower($q)) OR starts_with(lower($q), lower("commit"))
  OR len([o FOR o IN coalesce(outcomes, []) IF starts_with(lower(o.linked_commit), lower($q)) OR starts_with(lower($q), lower(o.linked_commit))]) > 0)"""


@contextmanager
def _actions(build_dir: Path, customer: str | None, conditions: list[str], params: dict[str, Any], limit: int | None = None) -> Iterator[Any]:
    """A reader of the found actions that meet `conditions` (DuckDB, `$name` parameters), newest first; at most `limit`."""
    where = " AND ".join(["action_found", *(["customer_id = $customer"] if customer else []), *conditions])
    query = f"SELECT * FROM provenance WHERE {where} ORDER BY timestamp DESC, event_id DESC" + (" LIMIT $limit" if limit is not None else "")
    named = {**params, **({"customer": customer} if customer else {}), **({"limit": limit} if limit is not None else {})}
    with connect(build_dir) as con:
        yield con.sql(query, params=named).to_arrow_reader(batch_size=1024)


def _event(row: dict[str, Any]) -> dict[str, Any]:
    """A `provenance` table row as the API shows an agent action."""
    outcomes = [{"event_id": item["event_id"], "status": item["status"], "linked_commit": item["linked_commit"],
                 "received_at": iso(item["received_at"])} for item in row["outcomes"] or []]
    return {"id": row["event_id"], "event_id": row["event_id"], "event_type": "agent_action", "customer_id": row["customer_id"],
            "actor_type": row["actor_type"], "actor_id": row["actor_id"], "tool": row["tool"], "intent": row["intent"], "model": row["model"],
            "files_written": row["files_written"] or [], "repo": row["repo"], "branch": row["branch"], "commit": row["commit"],
            "diff_hash": row["diff_hash"], "timestamp": iso(row["timestamp"]), "received_at": iso(row["received_at"]),
            "status": row["outcome"], "outcomes": outcomes}


def _since(text: str) -> float:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()  # no zone given: UTC, as the API
    except ValueError:
        raise ConfigError(f"--since {text!r} is no ISO 8601 time (e.g. 2026-12-01T00:00:00Z)") from None


def find_actions(build_dir: str | Path, *, commit: str | None = None, file: str | None = None, repo: str | None = None,
                 actor: str | None = None, tool: str | None = None, since: str | None = None, limit: int = 20,
                 customer: str | None = None) -> list[dict[str, Any]]:
    """The agent actions of `commit`, of `file` (in `repo`), or matching the search filters; newest first. DuckDB reads
    only the rows that can match (a repository is compared here, as the labels compare it)."""
    in_repo = (lambda row: True) if repo is None else (lambda row: bool(row["repo"]) and same_repo(row["repo"], repo))
    if commit is not None:
        with _actions(Path(build_dir), customer, [COMMIT_NEAR], {"q": commit}) as reader:
            table = reader.read_all()
        labeller = Labeller(table)
        wanted = {labeller.ids[number] for number in labeller.actions_of(commit)}
        return [_event(row) for row in table.to_pylist() if row["event_id"] in wanted]
    if file is not None:
        with _actions(Path(build_dir), customer, ["list_contains(files_written, $file)"], {"file": file}) as reader:
            return [_event(row) for row in reader.read_all().to_pylist() if in_repo(row)]
    filters = {name: value for name, value in (("actor_id", actor), ("tool", tool)) if value is not None}
    conditions = [f"{name} = ${name}" for name in filters] + (["timestamp >= $after"] if since else [])
    rows: list[dict[str, Any]] = []
    with _actions(Path(build_dir), customer, conditions, {**filters, **({"after": _since(since)} if since else {})},
                  limit if repo is None else None) as reader:
        for batch in reader:  # a repository is compared here: read until `limit` match
            rows += [row for row in batch.to_pylist() if in_repo(row)]
            if len(rows) >= limit:
                break
    return [_event(row) for row in rows[:limit]]


def labelled_rows(build_dir: str | Path, event_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Per curated table, how many rows the build labelled with any of `event_ids`, and the first few rows' keys."""
    found: dict[str, dict[str, Any]] = {}
    if not event_ids:
        return {table: {"rows": 0, "sample": []} for table in ROW_TABLES}
    with connect(build_dir) as con:
        for table, key in ROW_TABLES.items():
            matched = f"FROM {table} WHERE list_has_any(provenance.agent_action_ids, ?::VARCHAR[])"
            count = con.execute(f"SELECT count(*) {matched}", [event_ids]).fetchone()[0]
            sample = [value for (value,) in con.execute(f"SELECT {key} {matched} ORDER BY {key} LIMIT {SAMPLE_ROWS}", [event_ids]).fetchall()]
            found[table] = {"rows": int(count), "sample": sample}
    return found
