"""The telemetry events' rows, staged by Ray tasks, one per raw events file, so no process holds the whole lake's events.

1. Keys: a task per file reads it (`event_rows.read_event_file`) and returns only a 16-byte hash of each event's
   (org, event id), its line, the bytes it read and the file's quarantine entries.
2. The driver finds the events stored twice with numpy over the keys: the first in the lake's order (file, then line)
   counts, as `event_rows` decides within one file.
3. Rows: a task per file reads the same bytes again, makes the rows of its events but the repeats the driver named
   (`event_rows.event_rows`: redaction, sft and behaviour rows, token counts), stages them as its own Parquet files
   and returns its counts and the session ids its rows name.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.build.event_rows import TELEMETRY_SUFFIX, event_files, event_key, event_rows, read_event_file

KEY_BYTES = 16


def _line(raw_id: str) -> int:
    return int(raw_id.rsplit(":", 1)[1])


def file_keys(lake_root: str, relative: str) -> tuple[bytes, np.ndarray, int, list[dict[str, Any]]]:
    """One events file's event keys (KEY_BYTES each, in line order), their line numbers, the bytes read, its quarantine entries."""
    quarantined: list[dict[str, Any]] = []
    path = Path(lake_root) / relative
    try:
        size = path.stat().st_size
    except OSError:
        size = 0
    found = read_event_file(Path(lake_root), relative, quarantined, size)
    keys = b"".join(hashlib.sha256("\0".join(event_key(record)).encode()).digest()[:KEY_BYTES] for _, record in found)
    return keys, np.array([_line(raw_id) for raw_id, _ in found], dtype=np.int64), size, quarantined


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
    for table, table_rows in (("sft", sft), ("behavior", rows.behavior)):
        if table_rows:
            path = staging.stage_file(Path(stage), table, build_id, number, suffix=TELEMETRY_SUFFIX)
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.Table.from_pylist([{**row, "_origin": build_id} for row in table_rows], schema=staging.STAGE_SCHEMAS[table]), path)
    return {"counts": dict(rows.counts), "redactions": dict(rows.redactions), "sft_rows": len(sft), "behavior_rows": len(rows.behavior),
            "sessions": sorted({row["session_id"] for row in (*sft, *rows.behavior)})}


def stage_events(settings, lake_root: Path, stage: Path, build_id: str, *, org: str | None, forgotten: set[str]) -> tuple[set[str], dict[str, Any]]:
    """Stage the telemetry rows of this build (`_origin` = build_id) and their quarantine entries; returns their
    session ids (for the build's chosen sessions) and the manifest's `telemetry` section."""
    import ray

    files = event_files(lake_root)
    read = ray.remote(file_keys).options(num_cpus=settings.cpus_per_task)
    keyed = ray.get([read.remote(str(lake_root), relative) for relative in files])
    skips = repeats([keys for keys, *_ in keyed], [lines for _, lines, *_ in keyed])
    make = ray.remote(stage_file).options(num_cpus=settings.cpus_per_task)
    settings_json, gone = settings.model_dump_json(), sorted(forgotten)
    results = ray.get([make.remote(str(lake_root), relative, size, sorted(skip), number, str(stage), build_id, settings_json, org, gone)
                       for number, (relative, (_, _, size, _), skip) in enumerate(zip(files, keyed, skips))])
    quarantined = [item for *_, found in keyed for item in found]
    if quarantined:
        (stage / "quarantine").mkdir(parents=True, exist_ok=True)
        (stage / "quarantine" / "telemetry-events.json").write_text(json.dumps(quarantined))
    counts, redactions = Counter(duplicates=sum(len(skip) for skip in skips)), Counter()
    for result in results:
        counts.update(result["counts"])
        redactions.update(result["redactions"])
    summary = {"events": counts["events"], "duplicates": counts["duplicates"], "left_out": counts["left_out"],
               "unusable_turns": counts["unusable_turns"], "sft_rows": sum(result["sft_rows"] for result in results),
               "behavior_rows": sum(result["behavior_rows"] for result in results), "redactions": dict(sorted(redactions.items()))}
    return {session for result in results for session in result["sessions"]}, summary
