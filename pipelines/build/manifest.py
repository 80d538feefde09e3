"""A build's `manifest.json`, and publishing a finished build.

The manifest says what the build holds and how it was made: row counts, sessions by tier,
exclusions by reason, redactions by kind, duplicates by kind, quarantined records (each with its
file, offset, length and reason), the sha256 of every file (the tables' under `files`, the staging area's, which
the next incremental build starts from, under `staging`), the config and its hash, the code version. `publish` renames the `.partial` folder into place and then points `curated/LATEST` at it,
so a reader never sees a half-written build.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from pipelines.build.dedup import Dropped
from pipelines.build.settings import BuildSettings
from pipelines.build.sources import FileIndex
from trajforge.atomic import publish_dir, write_atomic
from trajforge.contracts.curated import TABLES
from trajforge.lake import Lake, sha256_of
from trajforge.version import code_version


def _trajectory_counts(build_dir: Path) -> dict[str, Counter]:
    counts = {"tiers": Counter(), "exclusions": Counter(), "redactions": Counter(), "sources": Counter()}
    for path in sorted((build_dir / "trajectories").glob("part-*.parquet")):
        table = pq.read_table(path, columns=["tier", "exclusion_reason", "redactions", "source"])
        counts["tiers"].update(table.column("tier").to_pylist())
        counts["sources"].update(table.column("source").to_pylist())
        counts["exclusions"].update(reason for reason in table.column("exclusion_reason").to_pylist() if reason)
        for found in table.column("redactions").to_pylist():
            for item in found or []:
                counts["redactions"][item["kind"]] += item["count"]
    return counts


def _quarantine(stage: Path, indexes: list[FileIndex]) -> list[dict[str, Any]]:
    entries = [item.as_dict() for index in indexes for item in index.quarantined]
    for path in sorted((stage / "quarantine").glob("*.json")) if (stage / "quarantine").is_dir() else []:
        entries += json.loads(path.read_text())
    unique = {(e["path"], e["offset"], e["reason"]): e for e in entries}
    return [unique[key] for key in sorted(unique)]


def _staging(build_dir: Path, stage: Path) -> list[dict[str, Any]]:
    return [{"path": path.relative_to(build_dir).as_posix(), "bytes": path.stat().st_size, "sha256": sha256_of(path)}
            for path in sorted(stage.rglob("*")) if path.is_file()]


def build_manifest(build_dir: Path, stage: Path, settings: BuildSettings, *, build_id: str, parent: str | None, org: str | None,
                   files: list[dict[str, Any]], indexes: list[FileIndex], sessions: dict[str, int], todo_origin: str,
                   dropped: list[Dropped], seconds: float, forgotten: dict[str, Any]) -> dict[str, Any]:
    counts = _trajectory_counts(build_dir)
    rows = Counter()
    for entry in files:
        rows[entry["path"].split("/", 1)[0]] += entry["rows"]
    quarantined = _quarantine(stage, indexes)
    sources = Counter(Path(index.path).parts[1] if len(Path(index.path).parts) > 1 else "raw" for index in indexes)
    return {
        "build_id": build_id,
        "parent_build_id": parent,
        "org": org,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(seconds, 2),
        "code_version": code_version(),
        "config_hash": settings.content_hash(org),
        "config": settings.model_dump(mode="json"),
        "tokenizer": settings.tokenizer,
        "embedding": {"enabled": settings.embedding.enabled, "model": settings.embedding.model if settings.embedding.enabled else None},
        "inputs": {"segments": sources.get("envelopes", 0), "trajectory_files": sources.get("trajectories", 0),
                   "envelopes": sum(i.records.num_rows for i in indexes if i.path.endswith(".seg")),
                   "records": sum(i.records.num_rows for i in indexes if i.path.endswith(".jsonl")),
                   "torn_tail_bytes": sum(i.torn_tail_bytes for i in indexes)},
        "sessions": sessions,
        "forgotten": forgotten,
        "rows": {table: rows.get(table, 0) for table in TABLES},
        "sources": dict(sorted(counts["sources"].items())),
        "tiers": {tier: counts["tiers"].get(tier, 0) for tier in ("TIER_A", "TIER_B", "TIER_C")},
        "exclusions": dict(sorted(counts["exclusions"].items())),
        "redactions": dict(sorted(counts["redactions"].items())),
        "dedup": {"exact": sum(1 for d in dropped if d.kind == "exact"), "near": sum(1 for d in dropped if d.kind == "near")},
        "quarantine": {"count": len(quarantined), "records": quarantined},
        "files": files,
        "staging": _staging(build_dir, stage),
    }


def publish(lake: Lake, work: Path, build_id: str, manifest: dict[str, Any]) -> Path:
    """Write the manifest, make every file of the build durable, rename the folder into place, then point LATEST
    (an `--org` build: `LATEST.org=<org>`) at it: a kill or a power loss at any point leaves the marker on the
    previous build, never on a partial one."""
    write_atomic(work / "manifest.json", json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    final = publish_dir(work, lake.build_dir(build_id), replace=False)
    write_atomic(lake.latest_marker(manifest.get("org")), build_id + "\n")
    return final
