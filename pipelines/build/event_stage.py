"""The telemetry events' rows, staged by Ray tasks, one per raw events file, so no process holds the whole lake's events.

1. Keys: a task per file reads it (`event_rows.read_event_file`) and stages only a 16-byte hash of each event's
   (org, event id) and its line (`_stage/events/<sha256 of its path>-keys.parquet`), returning the bytes it read and
   the file's quarantine entries.
2. The driver finds the events stored twice with numpy over the keys: the first in the lake's order (file, then line)
   counts, as `event_rows` decides within one file.
3. Rows: a task per file reads the same bytes again, makes the rows of its events but the repeats the driver named
   (`event_rows.event_rows`: redaction, sft and behaviour rows, token counts), stages them as its own Parquet files
   and returns its counts and the session ids its rows name.

Reuse: `_stage/events/files.json` keeps, per raw file, its signature when its keys were read (`staging.file_signature`),
the lines it skipped as repeats, its staged row files (named after the build that made them, their `_origin`) and what
its task returned. An incremental build links the parent's keys of every file whose signature is the same, and its rows
too while the file's skipped lines are the same (an event stored again in an earlier file changes them); every other file
is read again whole. The settings (the config hash), the org and the tombstones are the parent's, or there is no parent.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.build.event_rows import TELEMETRY_SUFFIX, event_files, event_key, event_rows, read_event_file
from pipelines.build.staging import FILE_LISTING, STAGE_DIR, file_signature, link_staged, parent_file_entries

log = logging.getLogger(__name__)
KEY_BYTES = 16
FOLDER = "events"  # under the staging area
FILES = FILE_LISTING
STAGE_FORMAT = 1  # bumped whenever the staged keys or files.json change shape


def _line(raw_id: str) -> int:
    return int(raw_id.rsplit(":", 1)[1])


def file_keys(lake_root: str, relative: str, keys_path: str) -> tuple[int, list[dict[str, Any]]]:
    """Stage one events file's event keys (KEY_BYTES each, in line order) and their line numbers at `keys_path`; returns the
    bytes read and its quarantine entries."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    quarantined: list[dict[str, Any]] = []
    path = Path(lake_root) / relative
    try:
        size = path.stat().st_size
    except OSError:
        size = 0
    found = read_event_file(Path(lake_root), relative, quarantined, size)
    keys = [hashlib.sha256("\0".join(event_key(record)).encode()).digest()[:KEY_BYTES] for _, record in found]
    pq.write_table(pa.table({"key": pa.array(keys, pa.binary(KEY_BYTES)), "line": pa.array([_line(raw_id) for raw_id, _ in found], pa.int64())}),
                   keys_path)
    return size, quarantined


def _read_keys(path: Path) -> tuple[bytes, np.ndarray]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    keys = table.column("key").combine_chunks()
    return (keys.buffers()[1].to_pybytes()[keys.offset * KEY_BYTES:][: len(keys) * KEY_BYTES] if len(keys) else b"",
            table.column("line").to_numpy().astype(np.int64))


def repeats(keys: list[bytes], lines: list[np.ndarray]) -> list[set[int]]:
    """For each file, the lines of the events an earlier line (of it or an earlier file) already holds."""
    counts = [len(line) for line in lines]
    if not sum(counts):
        return [set() for _ in lines]
    hashed = np.frombuffer(b"".join(keys), dtype=np.dtype((np.void, KEY_BYTES)))
    order = np.argsort(hashed, kind="stable")  # stable: the lake's order within each key
    ordered = hashed[order]
    later = order[1:][ordered[1:] == ordered[:-1]]
    files = np.repeat(np.arange(len(lines)), counts)
    flat = np.concatenate(lines)
    found: list[set[int]] = [set() for _ in lines]
    for position in later.tolist():
        found[files[position]].add(int(flat[position]))
    return found


def stage_file(lake_root: str, relative: str, size: int, skip: list[int], number: int, stage: str, build_id: str, settings_json: str,
               org: str | None, forgotten: list[str]) -> dict[str, Any]:
    """Stage one events file's rows but the lines in `skip`; its counts, redactions and session ids."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.build import staging
    from pipelines.build.process import split_of
    from pipelines.build.settings import BuildSettings
    from pipelines.build.tokens import TokenCounter, count_sft_tokens
    from trajforge.redaction import Redactor

    settings, skipped = BuildSettings.model_validate_json(settings_json), set(skip)
    records = [(raw_id, record) for raw_id, record in read_event_file(Path(lake_root), relative, [], size) if _line(raw_id) not in skipped]
    rows = event_rows(records, Redactor(settings.redaction), org=org, forgotten=set(forgotten),
                      system_prompt=settings.sft.system_prompt if settings.sft.telemetry_turns else "",
                      split_of=lambda session_id: split_of(session_id, settings.sft.dev_fraction))
    sft = rows.sft if settings.sft.telemetry_turns else []
    count_sft_tokens(sft, TokenCounter(settings.tokenizer))
    staged = {}
    for table, table_rows in (("sft", sft), ("behavior", rows.behavior)):
        staged[table] = None
        if table_rows:
            path = staging.stage_file(Path(stage), table, build_id, number, suffix=TELEMETRY_SUFFIX)
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.Table.from_pylist([{**row, "_origin": build_id} for row in table_rows], schema=staging.STAGE_SCHEMAS[table]), path)
            staged[table] = path.name
    return {"staged": staged, "counts": dict(rows.counts), "redactions": dict(rows.redactions), "sft_rows": len(sft), "behavior_rows": len(rows.behavior),
            "sessions": sorted({row["session_id"] for row in (*sft, *rows.behavior)})}


def _keys_name(relative: str) -> str:
    return hashlib.sha256(relative.encode()).hexdigest()[:32] + "-keys.parquet"


def _link_rows(parent: Path, stage: Path, entry: dict[str, Any]) -> bool:
    return all(link_staged(parent / STAGE_DIR / table / name, stage / table / name) for table, name in entry["staged"].items() if name)


def stage_events(settings, lake_root: Path, stage: Path, build_id: str, *, org: str | None, forgotten: set[str],
                 parent: Path | None = None) -> tuple[set[tuple[str, str]], dict[str, Any]]:
    """Stage (or link from `parent`) the telemetry rows and their quarantine entries; returns the (session id, `_origin`) of
    every staged row (for the build's chosen sessions) and the manifest's `telemetry` section."""
    import ray

    files, folder, previous = event_files(lake_root), stage / FOLDER, parent_file_entries(parent, FOLDER, STAGE_FORMAT)
    folder.mkdir(parents=True, exist_ok=True)
    entries, reading = [], {}
    for relative in files:
        signature, old = file_signature(lake_root / relative), previous.get(relative)
        if old is not None and signature is not None and old["signature"] == signature and link_staged(
                parent / STAGE_DIR / FOLDER / _keys_name(relative), folder / _keys_name(relative)):
            entries.append(old)
        else:
            reading[len(entries)] = relative
            entries.append({"path": relative, "signature": signature})
    read = ray.remote(file_keys).options(num_cpus=settings.cpus_per_task)
    for number, (size, quarantined) in zip(reading, ray.get([read.remote(str(lake_root), relative, str(folder / _keys_name(relative)))
                                                             for relative in reading.values()])):
        entries[number].update(size=size, quarantined=quarantined)
    keyed = [_read_keys(folder / _keys_name(relative)) for relative in files]
    skips = [sorted(skip) for skip in repeats([keys for keys, _ in keyed], [lines for _, lines in keyed])]
    make = ray.remote(stage_file).options(num_cpus=settings.cpus_per_task)
    settings_json, gone, pending = settings.model_dump_json(), sorted(forgotten), {}
    for number, (entry, skip) in enumerate(zip(entries, skips)):
        if not (number not in reading and entry["skip"] == skip and _link_rows(parent, stage, entry)):
            entries[number] = entry = {**entry, "skip": skip, "origin": build_id}
            pending[number] = make.remote(str(lake_root), entry["path"], entry["size"], skip, number, str(stage), build_id, settings_json, org, gone)
    for number, result in zip(pending, ray.get(list(pending.values()))):
        entries[number].update(staged=result.pop("staged"), result=result)
    (folder / FILES).write_text(json.dumps({"format": STAGE_FORMAT, "files": entries}))
    if len(pending) < len(entries):
        log.info("telemetry events: %d of %d files' rows reused from build %s (unchanged since it staged them), %d staged", len(entries) - len(pending),
                 len(entries), parent.name, len(pending))
    quarantined = [item for entry in entries for item in entry["quarantined"]]
    if quarantined:
        (stage / "quarantine").mkdir(parents=True, exist_ok=True)
        (stage / "quarantine" / "telemetry-events.json").write_text(json.dumps(quarantined))
    return _chosen(entries), _summary(entries, skips, staged=len(pending), parent=parent)


def _chosen(entries: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(session, entry["origin"]) for entry in entries for session in entry["result"]["sessions"]}


def _summary(entries: list[dict[str, Any]], skips: list[list[int]], *, staged: int, parent: Path | None) -> dict[str, Any]:
    results = [entry["result"] for entry in entries]
    counts, redactions = Counter(duplicates=sum(len(skip) for skip in skips)), Counter()
    for result in results:
        counts.update(result["counts"])
        redactions.update(result["redactions"])
    return {"events": counts["events"], "duplicates": counts["duplicates"], "left_out": counts["left_out"],
            "unusable_turns": counts["unusable_turns"], "sft_rows": sum(result["sft_rows"] for result in results),
            "behavior_rows": sum(result["behavior_rows"] for result in results), "redactions": dict(sorted(redactions.items())),
            "files": len(entries), "files_staged": staged, "files_reused": len(entries) - staged,
            "reused_from": parent.name if staged < len(entries) else None}
