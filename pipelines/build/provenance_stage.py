"""The build's `provenance` table: seed 003's agent actions, the outcomes that name them folded in.

1. Stage: every raw provenance file becomes `_stage/provenance/<sha256 of its path>.parquet` (`provenance_rows.parse_file`,
   one Ray task per file). `_stage/provenance/files.json` keeps, per raw file, its signature (`staging.file_signature`),
   its counts, its quarantine entries and the ids of the actions it left out. An incremental build links the parent's
   staged file of every raw file whose signature is the same (the raw lake is append-only: new events change it) and
   parses the rest; `PARSE_FORMAT` or the settings changing (the config hash) parses everything, and so does a new tombstone (the
   build has no parent then).
2. Fold, with DuckDB over the staged files: an event stored twice (by event id) counts once, the first in the lake's
   order; every outcome goes onto the agent action of its customer it names (`original_event_id`), oldest first, the
   latest giving `outcome`, `linked_commit` and `outcome_at`. Outcomes of an action the lake does not hold (its line
   damaged, say) are kept: one row per such action with `action_found` false, counted in the manifest as
   `orphan_outcomes` and `missing_actions`. Outcomes of an action left out for a tombstone are left out with it.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipelines.build.provenance_labels import Labeller
from pipelines.build.provenance_rows import PARSE_FORMAT, parse_file, raw_provenance_files
from pipelines.build.staging import file_signature, link_staged
from trajforge.contracts.curated import PROVENANCE_ACTIONS
from trajforge.contracts.provenance import OUTCOME_STATUSES
from trajforge.lake import Lake

FOLDER = "provenance"  # under the staging area
FILES = "files.json"

EVENTS = """
CREATE TEMP TABLE ev AS
SELECT * FROM read_parquet({files}) QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY raw_path, line) = 1
"""
COUNTS = """
SELECT count(*) AS distinct_events,
       count(*) FILTER (event_type = 'outcome' AND original_event_id IN (SELECT event_id FROM left_out)) AS outcomes_left_out
FROM ev
"""
FOLD = """
WITH outs AS (
    SELECT * FROM ev WHERE event_type = 'outcome' AND original_event_id NOT IN (SELECT event_id FROM left_out)
), folded AS (
    SELECT customer_id, original_event_id AS event_id, count(*) AS outcome_count,
           list(struct_pack(event_id := event_id, status := status, linked_commit := linked_commit, received_at := received_at,
                            raw_id := raw_path || ':' || line) ORDER BY received_at, raw_path, line) AS outcomes
    FROM outs GROUP BY ALL
)
SELECT coalesce(a.event_id, f.event_id) AS event_id, coalesce(a.customer_id, f.customer_id) AS customer_id, a.event_id IS NOT NULL AS action_found,
       a.actor_type, a.actor_id, a.tool, a.intent, a.model, a.files_written, a.repo, a.branch, a."commit", a.diff_hash, a."timestamp",
       a.received_at, a.token_id, a.raw_path || ':' || a.line AS raw_id, f.outcomes[-1].status AS outcome,
       f.outcomes[-1].linked_commit AS linked_commit, f.outcomes[-1].received_at AS outcome_at, coalesce(f.outcome_count, 0) AS outcome_count,
       coalesce(f.outcomes, []) AS outcomes
FROM (SELECT * FROM ev WHERE event_type = 'agent_action') a
FULL OUTER JOIN folded f ON a.event_id = f.event_id AND a.customer_id = f.customer_id
ORDER BY 1, 2
"""


@dataclass
class ProvenanceStage:
    """The folded table, the labeller of the training rows built from it, and the manifest's section."""

    table: pa.Table
    labeller: Labeller
    summary: dict[str, Any] = field(default_factory=dict)

    def section(self) -> dict[str, Any]:
        """The manifest's `provenance` section, with the rows the labeller labelled while the tables were written."""
        return {**self.summary, "labelled_rows": {table: self.labeller.labelled.get(table, 0) for table in ("behavior", "sft", "trajectories")}}


def _parent_files(parent: Path | None) -> dict[str, dict[str, Any]]:
    if parent is None:
        return {}
    try:
        found = json.loads((parent / "_stage" / FOLDER / FILES).read_text())
    except (OSError, ValueError):
        return {}
    if found.get("format") != PARSE_FORMAT:
        return {}
    return {entry["path"]: {**entry, "from": parent / "_stage" / FOLDER / entry["staged"]} for entry in found.get("files", [])}


def _parse(settings, lake: Lake, todo: list[tuple[str, Path]], forgotten: set[str], org: str | None) -> list[dict[str, Any]]:
    if not todo:
        return []
    import ray

    task = ray.remote(parse_file).options(num_cpus=settings.cpus_per_task)
    gone, settings_json = sorted(forgotten), settings.model_dump_json()
    return ray.get([task.remote(str(lake.root), relative, str(target), gone, org, settings_json) for relative, target in todo])


def fold(staged: list[Path], left_out: list[str]) -> tuple[pa.Table, dict[str, int]]:
    """The `provenance` table (PROVENANCE_ACTIONS) from the staged events, without the outcomes of `left_out` actions;
    and how many distinct events there were and how many outcomes went with a left-out action."""
    if not staged:
        return PROVENANCE_ACTIONS.empty_table(), {"distinct_events": 0, "outcomes_left_out": 0}
    import duckdb

    connection = duckdb.connect(config={"memory_limit": "1GB", "threads": 2})
    try:
        connection.register("left_out", pa.table({"event_id": pa.array(left_out, pa.string())}))
        connection.execute(EVENTS.format(files=[str(path) for path in staged]))
        relation = connection.sql(COUNTS)
        counts = dict(zip(relation.columns, relation.fetchall()[0]))
        table = connection.sql(FOLD).to_arrow_table()
    finally:
        connection.close()
    return table.select(PROVENANCE_ACTIONS.names).cast(PROVENANCE_ACTIONS), counts


def stage_provenance(settings, lake: Lake, stage: Path, build_id: str, parent: Path | None, org: str | None,
                     forgotten: set[str]) -> ProvenanceStage:
    """Stage (or link from `parent`) every raw provenance file, fold them, and say what was done; see the module's doc."""
    folder = stage / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    previous = _parent_files(parent)
    entries: list[dict[str, Any]] = []
    todo: list[tuple[str, Path]] = []
    for relative in raw_provenance_files(lake.root):
        name = hashlib.sha256(relative.encode()).hexdigest()[:32] + ".parquet"
        signature, old = file_signature(lake.root / relative), previous.get(relative)
        if old is not None and signature is not None and old["signature"] == signature and link_staged(old["from"], folder / name):
            entries.append({key: value for key, value in old.items() if key != "from"})
        else:
            todo.append((relative, folder / name))
            entries.append({"path": relative, "staged": name, "signature": signature, "origin": build_id})
    results = {result["path"]: result for result in _parse(settings, lake, todo, forgotten, org)}
    for entry in entries:
        entry.update(results.get(entry["path"], {}))
    (folder / FILES).write_text(json.dumps({"format": PARSE_FORMAT, "files": entries}))
    quarantined = [item for entry in entries for item in entry["quarantined"]]
    if quarantined:
        (stage / "quarantine").mkdir(parents=True, exist_ok=True)
        (stage / "quarantine" / "provenance.json").write_text(json.dumps(quarantined))
    left_out = sorted({event_id for entry in entries for event_id in entry["left_out_actions"]})
    table, counts = fold([folder / entry["staged"] for entry in entries], left_out)
    return ProvenanceStage(table, Labeller(table), _summary(table, entries, counts, parsed=len(todo)))


def _summary(table: pa.Table, entries: list[dict[str, Any]], counts: dict[str, int], parsed: int) -> dict[str, Any]:
    found = table.column("action_found").to_pylist()
    outcomes = table.column("outcome_count").to_pylist()
    statuses = Counter(status for status, here in zip(table.column("outcome").to_pylist(), found) if here)
    redactions: Counter = Counter()
    for entry in entries:
        redactions.update(entry["redactions"])
    return {
        "files": len(entries), "files_parsed": parsed, "files_reused": len(entries) - parsed,
        "events": counts["distinct_events"], "agent_actions": sum(found), "outcomes": sum(outcomes),
        "orphan_outcomes": sum(count for count, here in zip(outcomes, found) if not here), "missing_actions": len(found) - sum(found),
        "by_outcome": {**{status: statuses.get(status, 0) for status in OUTCOME_STATUSES}, "none": statuses.get(None, 0)},
        "duplicates": sum(entry["events"] for entry in entries) - counts["distinct_events"],
        "left_out": sum(entry["left_out"] for entry in entries) + counts["outcomes_left_out"],
        "quarantined": sum(len(entry["quarantined"]) for entry in entries), "redactions": dict(sorted(redactions.items())),
    }
