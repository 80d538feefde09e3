"""The build's dataset rows: the processed splits of the public code-edit datasets, staged as sft rows.

`trajforge datasets` publishes `lake/processed/datasets/<language>/{train,dev,test}.jsonl` with a `manifest.json`
holding each file's sha256. When that manifest exists and `build.datasets.enabled` is on (the default), a build
(not an `--org` one: public data belongs to no organisation) turns the train and dev records into sft rows
(`dataset_rows`), one Ray task per `bytes_per_task` of a file, staged as `_stage/sft/<origin>-b<n>-datasets.parquet`.
`test` is never read: it stays held out where it is, and the build's manifest names each test file with its sha256
and row count (`datasets.held_out`), so an evaluation can take exactly the split this build left out.

Reuse: the rows' key is the sha256 of the processed manifest's train and dev files (path, sha256), the `datasets`
settings and `ROWS_FORMAT`. An incremental build whose parent staged dataset rows under the same key links them
(`_stage/datasets/summary.json` keeps the key); any other build makes them again, after checking every file it reads
against the processed manifest (a file that differs is quarantined whole, the build goes on).

Dedup: the datasets job already keeps the first of identical `(instruction, pre)` pairs across datasets, so the
build only drops rows whose rendered chat is the same after redaction (train before dev, then file order): exact,
listed in the `duplicates` table. The build's MinHash dedup compares sessions' step text, which a dataset row has
none of, so it is not applied to them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from pipelines.build.settings import BuildSettings
from pipelines.build.staging import stage_file, staged_files
from trajforge.lake import Lake, sha256_of

log = logging.getLogger(__name__)
DATASET_SUFFIX = "-datasets.parquet"
SUMMARY = Path("datasets") / "summary.json"  # under the staging area
ROWS_FORMAT = 1  # bumped whenever dataset_rows renders a record differently
TRAINING_SPLITS = ("train", "dev")


@dataclass
class DatasetRows:
    """What the job needs: the rows to keep (session id -> origin), the duplicates' rows, the manifest's section."""

    chosen: dict[str, str] = field(default_factory=dict)
    duplicates: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] | None = None


def split_of_file(path: str) -> str:
    return Path(path).stem


def rows_key(settings: BuildSettings, manifest: dict[str, Any]) -> str:
    used = sorted((str(entry["path"]), str(entry["sha256"])) for entry in manifest["files"] if split_of_file(entry["path"]) in TRAINING_SPLITS)
    options = settings.datasets.model_dump(mode="json", exclude={"bytes_per_task"})
    return hashlib.sha256(json.dumps([ROWS_FORMAT, options, used], sort_keys=True).encode()).hexdigest()


def read_processed_manifest(folder: Path) -> dict[str, Any]:
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list) or \
            not all(isinstance(e, dict) and isinstance(e.get("path"), str) and isinstance(e.get("sha256"), str) for e in manifest["files"]):
        raise ValueError("its `files` is not a list of {path, sha256}")
    return manifest


def byte_ranges(path: Path, step: int) -> list[tuple[int, int]]:
    """The file cut into ranges of about `step` bytes, each ending just after a newline (or at the end)."""
    size = path.stat().st_size
    ranges, start = [], 0
    with open(path, "rb") as handle:
        while start < size:
            end = min(start + step, size)
            if end < size:
                handle.seek(end - 1)
                end += len(handle.readline()) - 1
            ranges.append((start, end))
            start = end
    return ranges


def _blank() -> dict[str, Any]:
    return {"license": None, "version": None, "source_sha256": None, "train": 0, "dev": 0, "test_held_out": 0, "left_out_by_share": 0, "duplicates": 0}


def _per_dataset(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = {}
    for name, stats in (manifest.get("datasets") or {}).items():
        meta = (manifest.get("inputs") or {}).get(name) or (stats.get("meta") if isinstance(stats, dict) else None) or {}
        splits = stats.get("splits") if isinstance(stats, dict) else {}
        found[name] = {"license": meta.get("license"), "version": meta.get("version"), "source_sha256": meta.get("sha256"), "train": 0, "dev": 0,
                       "test_held_out": sum(int(n) for key, n in (splits or {}).items() if key.endswith("/test")), "left_out_by_share": 0, "duplicates": 0}
    return found


def _make(settings: BuildSettings, folder: Path, manifest: dict[str, Any], stage: Path, build_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Render, redact and stage the train and dev rows in Ray tasks; returns the summary (with `duplicate_rows`) and
    the kept rows' ids in order."""
    import ray

    from pipelines.build.dataset_rows import render_chunk

    per_dataset = _per_dataset(manifest)
    licenses = {name: item["license"] for name, item in per_dataset.items()}
    quarantined: list[dict[str, Any]] = []
    entries = sorted((e for e in manifest["files"] if split_of_file(e["path"]) in TRAINING_SPLITS),
                     key=lambda e: (TRAINING_SPLITS.index(split_of_file(e["path"])), manifest["files"].index(e)))
    chunks = []
    for entry in entries:
        path, relative = folder / entry["path"], f"processed/datasets/{entry['path']}"
        try:
            matches = path.is_file() and sha256_of(path) == entry["sha256"]
        except OSError:
            matches = False
        if not matches:
            size = path.stat().st_size if path.is_file() else 0
            quarantined.append({"source": "datasets", "path": relative, "offset": 0, "length": size,
                                "reason": "missing, or not the sha256 the processed manifest lists: run `trajforge datasets --stage process` again"})
            continue
        for start, end in byte_ranges(path, settings.datasets.bytes_per_task):
            chunks.append({"path": str(path), "relative": relative, "split": split_of_file(entry["path"]), "start": start, "end": end,
                           "licenses": licenses, "origin": build_id, "target": str(stage_file(stage, "sft", build_id, len(chunks), DATASET_SUFFIX))})
    (stage / "sft").mkdir(parents=True, exist_ok=True)
    task = ray.remote(render_chunk).options(num_cpus=settings.cpus_per_task)
    results = ray.get([task.remote(chunk, settings.model_dump_json()) for chunk in chunks])
    kept: dict[str, str] = {}
    duplicates, splits, redactions = [], Counter(), Counter()
    for chunk, result in zip(chunks, results):
        quarantined += result["quarantined"]
        redactions.update(result["redactions"])
        for name, count in result["left_out"].items():
            per_dataset.setdefault(name, _blank())["left_out_by_share"] += count
        for example_id, digest in zip(result["ids"], result["digests"]):
            name = example_id.split(":")[1]
            item = per_dataset.setdefault(name, _blank())
            if digest in kept:
                duplicates.append({"dropped_session_id": example_id, "kept_session_id": kept[digest], "kind": "exact", "similarity": 1.0,
                                   "dropped_score": None, "kept_score": None})
                item["duplicates"] += 1
                continue
            kept[digest] = example_id
            splits[chunk["split"]] += 1
            item[chunk["split"]] += 1
    held_out = [{"path": e["path"], "rows": e.get("rows"), "sha256": e["sha256"]} for e in manifest["files"] if split_of_file(e["path"]) == "test"]
    summary = {"origin": build_id, "processed": str(folder), "processed_created_at": manifest.get("created_at"),
               "sft_rows": {split: splits[split] for split in TRAINING_SPLITS}, "duplicates": len(duplicates),
               "held_out": held_out, "test_rows_held_out": sum(int(e.get("rows") or 0) for e in held_out),
               "datasets": per_dataset, "redactions": dict(sorted(redactions.items())), "quarantined": quarantined,
               "duplicate_rows": duplicates}
    return summary, list(kept.values())


def _reuse(parent: Path, stage: Path) -> None:
    for path in staged_files(parent / "_stage", "sft", DATASET_SUFFIX):
        target = stage / "sft" / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)


def _parent_summary(parent: Path | None, key: str) -> dict[str, Any] | None:
    if parent is None:
        return None
    try:
        summary = json.loads((parent / "_stage" / SUMMARY).read_text())
    except (OSError, ValueError):
        return None
    return summary if summary.get("key") == key else None


def stage_datasets(settings: BuildSettings, lake: Lake, stage: Path, build_id: str, parent: Path | None, org: str | None) -> DatasetRows:
    """Stage (or link from `parent`) the dataset rows of this build; see the module's doc."""
    folder = lake.processed_datasets
    if not settings.datasets.enabled or not (folder / "manifest.json").exists():
        return DatasetRows()
    if org is not None:
        log.info("--org %s: the public datasets of %s are left out (they belong to no organisation)", org, folder)
        return DatasetRows()
    try:
        manifest = read_processed_manifest(folder)
    except (OSError, ValueError) as exc:
        entry = {"source": "datasets", "path": "processed/datasets/manifest.json", "offset": 0, "length": 0,
                 "reason": f"the processed datasets' manifest cannot be read ({exc}): no dataset rows; run `trajforge datasets --stage process`"}
        _write_quarantine(stage, [entry])
        return DatasetRows(summary={"sft_rows": dict.fromkeys(TRAINING_SPLITS, 0), "error": entry["reason"], "quarantined": [entry]})
    key = rows_key(settings, manifest)
    summary = _parent_summary(parent, key)
    if summary is not None:
        _reuse(parent, stage)
        log.info("dataset rows reused from build %s (the processed files and settings are the same)", summary["origin"])
        ids = None
    else:
        summary, ids = _make(settings, folder, manifest, stage, build_id)
        summary["key"] = key
    (stage / SUMMARY).parent.mkdir(parents=True, exist_ok=True)
    (stage / SUMMARY).write_text(json.dumps(summary))
    _write_quarantine(stage, summary["quarantined"])
    if ids is None:
        dropped = {row["dropped_session_id"] for row in summary["duplicate_rows"]}
        ids = [i for path in staged_files(stage, "sft", DATASET_SUFFIX) for i in pq.read_table(path, columns=["session_id"]).column(0).to_pylist()
               if i not in dropped]
    section = {key_: value for key_, value in summary.items() if key_ not in ("duplicate_rows", "quarantined", "key")}
    section.update(rows_key=key, quarantined=len(summary["quarantined"]), reused_from=summary["origin"] if summary["origin"] != build_id else None)
    return DatasetRows({session_id: summary["origin"] for session_id in ids}, summary["duplicate_rows"], section)


def _write_quarantine(stage: Path, entries: list[dict[str, Any]]) -> None:
    if entries:
        (stage / "quarantine").mkdir(parents=True, exist_ok=True)
        (stage / "quarantine" / "datasets.json").write_text(json.dumps(entries))
