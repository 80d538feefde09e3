"""One raw provenance file (`lake/raw/provenance/customer=*/date=*/*.jsonl`, seed 003's events) as staged rows.

The ingest service writes each accepted `agent_action` or `outcome` as one line `{"event_id", "event_type",
"customer_id", "token_id", "received_at", "client", "event"}`, `event` exactly as sent. `parse_file` reads a file once,
checks every line against the contract (`trajforge.contracts.provenance.parse_provenance`, as the query index does) and
writes one EVENTS row per good line, unfolded: `provenance_stage` folds the outcomes onto their actions over the whole lake.

A line that is not such a record (damaged bytes, a writer killed mid-line, an event the contract refuses) is a
quarantine entry with its offset and length, and the rest of the file goes on; a file that cannot be read is one entry.
Tombstones: an event is left out (counted, never staged) when the record's `customer_id`, or the event's `actor_id`,
`contributor_id`, `contributorId`, `user_id` or `userId` (the names telemetry events are left out by, and the user id
seed 003 links events to) is a forgotten contributor id; the ids of left-out actions are kept, so their outcomes are
left out too rather than counted as orphans. `--org`: only the customer whose id is the org is kept.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa

from trajforge.contracts.provenance import AGENT_ACTION, AgentAction, parse_provenance

RAW_GLOB = "customer=*/date=*/*.jsonl"
PARSE_FORMAT = 2  # bumped whenever a file's staged rows would differ: the next build parses every file again
PERSON_KEYS = ("actor_id", "contributor_id", "contributorId", "user_id", "userId")
EVENTS = pa.schema([
    ("event_id", pa.string()), ("event_type", pa.string()), ("customer_id", pa.string()), ("token_id", pa.string()),
    ("received_at", pa.float64()), ("raw_path", pa.string()), ("line", pa.int64()),
    ("actor_type", pa.string()), ("actor_id", pa.string()), ("tool", pa.string()), ("intent", pa.string()), ("model", pa.string()),
    ("files_written", pa.list_(pa.string())), ("repo", pa.string()), ("branch", pa.string()), ("commit", pa.string()),
    ("diff_hash", pa.string()), ("timestamp", pa.float64()),
    ("original_event_id", pa.string()), ("status", pa.string()), ("linked_commit", pa.string()),
])


def raw_provenance_files(lake_root: Path) -> list[str]:
    """The raw provenance files, relative to the lake root, sorted (the lake's order of events)."""
    root = Path(lake_root) / "raw" / "provenance"
    return sorted(str(path.relative_to(lake_root)) for path in root.glob(RAW_GLOB) if not path.is_dir()) if root.is_dir() else []


def _forgets(record: dict[str, Any], forgotten: set[str]) -> bool:
    event = record["event"]
    names = [record.get("customer_id"), *(event.get(key) for key in PERSON_KEYS)]
    return any(isinstance(name, str) and name.lower() in forgotten for name in names)


def _row(record: dict[str, Any], event, relative: str, line: int, redactor) -> tuple[dict[str, Any], dict[str, int]]:
    row = {"event_id": str(record["event_id"]).lower(), "event_type": event.event_type, "customer_id": str(record["customer_id"]),
           "token_id": record.get("token_id"), "received_at": float(record["received_at"]), "raw_path": relative, "line": line}
    if isinstance(event, AgentAction):
        found: dict[str, int] = {}

        def redacted(text: str | None) -> str | None:  # the free text an agent sends: a repo URL may carry a password
            if redactor is None or text is None:
                return text
            redaction = redactor.redact(text)
            for kind, count in redaction.counts.items():
                found[kind] = found.get(kind, 0) + count
            return redaction.text

        row.update(actor_type=event.actor_type, actor_id=event.actor_id, tool=event.tool, intent=redacted(event.intent), model=event.model,
                   files_written=[redacted(path) for path in event.files_written], repo=redacted(event.repo), branch=redacted(event.branch),
                   commit=event.commit, diff_hash=event.diff_hash, timestamp=event.timestamp.timestamp() if event.timestamp else row["received_at"])
        return row, found
    row.update(original_event_id=event.original_event_id, status=event.status, linked_commit=event.linked_commit, timestamp=row["received_at"])
    return row, {}


def parse_file(lake_root: str, relative: str, target: str, forgotten: list[str], org: str | None, settings_json: str | None) -> dict[str, Any]:
    """Stage one raw file's events at `target` (Parquet, EVENTS); answers its counts, quarantine entries, the ids of
    the actions it left out and its redactions. A Ray task: plain arguments, a JSON-ready answer."""
    redactor = None
    if settings_json is not None:
        from pipelines.build.settings import BuildSettings
        from trajforge.redaction import Redactor

        redactor = Redactor(BuildSettings.model_validate_json(settings_json).redaction)
    gone = set(forgotten)
    result: dict[str, Any] = {"path": relative, "events": 0, "left_out": 0, "quarantined": [], "left_out_actions": [], "redactions": {}}
    rows: list[dict[str, Any]] = []
    try:
        data = (Path(lake_root) / relative).read_bytes()
    except OSError as exc:  # a broken link, an I/O error: the whole file is listed, the build goes on
        result["quarantined"].append({"source": "provenance", "path": relative, "offset": 0, "length": 0, "reason": f"unreadable: {exc.strerror or exc}"})
        data = b""
    offset = 0
    for number, line in enumerate(data.splitlines(keepends=True), start=1):
        reason = None
        try:
            record = json.loads(line) if line.endswith(b"\n") else None
            if not (isinstance(record, dict) and record.get("event_id") and record.get("customer_id") and isinstance(record.get("event"), dict)
                    and isinstance(record.get("received_at"), (int, float))):
                raise ValueError("not a provenance record")
            event = parse_provenance(record["event"])
        except Exception as exc:  # noqa: BLE001 -- bad bytes never stop a build: the line is listed with its reason
            reason = "torn last line" if not line.endswith(b"\n") else f"not a provenance event record: {str(exc)[:200]}"
        if reason:
            result["quarantined"].append({"source": "provenance", "path": relative, "offset": offset, "length": len(line), "reason": reason})
        elif (org is not None and str(record["customer_id"]) != org) or _forgets(record, gone):
            result["left_out"] += 1
            if record["event"].get("event_type") == AGENT_ACTION:
                result["left_out_actions"].append(str(record["event_id"]).lower())
        else:
            row, found = _row(record, event, relative, number, redactor)
            rows.append(row)
            for kind, count in found.items():
                result["redactions"][kind] = result["redactions"].get(kind, 0) + count
        offset += len(line)
    result["events"] = len(rows)
    import pyarrow.parquet as pq

    Path(target).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=EVENTS), target)
    return result
