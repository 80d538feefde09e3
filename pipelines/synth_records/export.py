"""A job's merged export (seed 001's GET /api/tasks/[id]/export?format=json|csv): every peer's results merged in
index order, each index once. JSON: an array of the records' objects; CSV: one row per record, one column per
schema property (in the schema's order, then any other key met, in order of appearance), nested values
JSON-encoded in their cells. Failed records are left out unless asked for (`include_failed`: JSON then holds the
results lines `{i, ok, data|error}`, CSV gains `_i`, `_ok` and `_error` columns)."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from pipelines.synth_records.results import read_results
from pipelines.synth_records.store import JobFiles
from trajforge.errors import TrajforgeError

FORMATS = ("json", "csv")


class NotFinished(TrajforgeError, RuntimeError):
    """The job has not succeeded yet (export it with partial=True to take what is there)."""


def merged_results(files: JobFiles) -> list[dict[str, Any]]:
    """The results lines of all peers, in index order, one per index."""
    merged: dict[int, dict[str, Any]] = {}
    for peer in files.base()["peers"]:
        for index, record in read_results(files.peer_results_path(peer)).items():
            merged.setdefault(index, record)
    return [merged[index] for index in sorted(merged)]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _columns(schema: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    columns = list((schema.get("properties") or {}).keys())
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    return columns


def export_job(files: JobFiles, fmt: str, include_failed: bool = False, partial: bool = False) -> str:
    """The export's text in `fmt` (json or csv)."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    base = files.base()
    if base["status"] != "succeeded" and not partial:
        raise NotFinished(f"job {files.id} is {base['status']}, not succeeded: resume it first (trajforge synth-records "
                          f"resume {files.id}), or export what is there with --partial")
    results = [record for record in merged_results(files) if include_failed or record.get("ok")]
    if fmt == "json":
        value = results if include_failed else [record["data"] for record in results]
        return json.dumps(value, indent=2, ensure_ascii=False) + "\n"
    rows = [record.get("data") or {} for record in results]
    columns = _columns(files.details()["schema"], rows)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*(["_i", "_ok", "_error"] if include_failed else []), *columns])
    for record, row in zip(results, rows):
        extra = [record["i"], _cell(bool(record.get("ok"))), record.get("error", "")] if include_failed else []
        writer.writerow([*extra, *(_cell(row.get(column)) for column in columns)])
    return out.getvalue()
