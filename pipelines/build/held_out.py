"""Loop runs on held-out test tasks: the teacher's and the actors' runs of a processed test record stay out of training.

A processed split of the public datasets (`lake/processed/datasets/<language>/test.jsonl`) is also a tasks file the
actor loop and the teacher accept, so evaluating a model on it leaves step records in `lake/raw/trajectories/` whose
session id (`<source>:<task id>:<run id>`) names a test task. Once per build the driver reads the task ids of every
test file the processed manifest lists (each checked against its sha256; one that differs, or is missing, is a
quarantine entry, and the ids of a present one are held out all the same: holding out too much never leaks), and
marks the loop sessions that run one of them in the batches it hands to the process stage (no id list travels in the
settings, so the config hash stays the same). Such a session's sft rows get `split: "test"` (the learner reads only
train and dev), its trajectory row stays with `training_eligible` false and `exclusion_reason` `held_out_test`, and the
manifest's `held_out_loop` section counts them by source. The ids' digest is in that section: an incremental build
whose parent held out another set builds every loop session again. No processed folder: nothing is held out.

The other loop runs follow their task's split too, so that no task is trained on in one split and evaluated in the
other: a run of a processed dev record's task is split dev, one of a processed train record's (`<dataset>-<16 hex>`
of a dataset the processed manifest lists) train, and a run of any other task (a synthetic one) is split by a hash of
its task id, so every run of one task lands in the same split (`split_of_task`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.build.dataset_stage import read_processed_manifest, split_of_file
from trajforge.lake import Lake, sha256_of

log = logging.getLogger(__name__)
REASON = "held_out_test"  # the trajectory row's exclusion_reason
SPLIT = "test"  # the sft rows' split
LOOP_SOURCES = ("teacher", "actor")
SECTION = "held_out_loop"  # the manifest's key


def digest_of(task_ids: set[str] | frozenset[str]) -> str:
    return hashlib.sha256("\n".join(sorted(task_ids)).encode()).hexdigest()


@dataclass
class HeldOut:
    """The test task ids of the processed datasets, their digest, the files they came from, and what was quarantined."""

    task_ids: frozenset[str] = frozenset()
    files: list[dict[str, Any]] = field(default_factory=list)
    quarantined: list[dict[str, Any]] = field(default_factory=list)
    dev_task_ids: frozenset[str] = frozenset()  # the processed dev records' tasks
    datasets: frozenset[str] = frozenset()  # the processed datasets' names: `<name>-<16 hex>` is one of their train tasks

    @property
    def digest(self) -> str:
        """What the loop runs' splits follow (an incremental build whose parent's differs splits every run again)."""
        if not self.dev_task_ids and not self.datasets:
            return digest_of(self.task_ids)
        return digest_of({*self.task_ids, *(f"dev\0{task}" for task in self.dev_task_ids), *(f"dataset\0{name}" for name in self.datasets)})

    def split_of(self, session_id: str) -> str | None:
        """The split of the processed record whose task this loop session runs (test, dev or train), None for any other
        task or session."""
        source, _, rest = session_id.partition(":")
        if source not in LOOP_SOURCES:
            return None
        tasks = [rest[:index] for index, char in enumerate(rest) if char == ":"]  # a task id may hold colons
        if any(task in self.task_ids for task in tasks):
            return SPLIT
        if any(task in self.dev_task_ids for task in tasks):
            return "dev"
        if any(_PROCESSED_TASK.fullmatch(task) and task.rsplit("-", 1)[0] in self.datasets for task in tasks):
            return "train"
        return None


_PROCESSED_TASK = re.compile(r".+-[0-9a-f]{16}")  # pipelines/datasets/process.py: `<dataset>-<first 16 hex of its sha256>`


def task_of(session_id: str) -> str:
    """The task id of a loop session `<source>:<task id>:<run id>` (the run id holds no colon)."""
    return session_id.partition(":")[2].rpartition(":")[0]


def _task_ids(path: Path) -> tuple[set[str], int]:
    found, unreadable = set(), 0
    with open(path, "rb") as handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                task = json.loads(line).get("task_id")
            except (ValueError, AttributeError):
                task = None
            if isinstance(task, str) and task:
                found.add(task)
            else:
                unreadable += 1
    return found, unreadable


def read_held_out(lake: Lake) -> HeldOut:
    """The test and dev task ids of `lake/processed/datasets/` and the names of its datasets (none without its manifest)."""
    folder = lake.processed_datasets
    if not (folder / "manifest.json").exists():
        return HeldOut()
    try:
        manifest = read_processed_manifest(folder)
        listed = [(entry["path"], entry["sha256"]) for entry in manifest["files"] if split_of_file(entry["path"]) == SPLIT]
        dev = [folder / entry["path"] for entry in manifest["files"] if split_of_file(entry["path"]) == "dev"]
        datasets = frozenset(str(name) for name in manifest.get("datasets") or {})
    except (OSError, ValueError, AttributeError, TypeError, KeyError) as exc:
        log.warning("the processed datasets' manifest cannot be read (%s): holding out the tasks of every */test.jsonl there", exc)
        listed = [(path.relative_to(folder).as_posix(), None) for path in sorted(folder.glob("*/test.jsonl"))]
        dev, datasets = sorted(folder.glob("*/dev.jsonl")), frozenset()
    held = HeldOut(dev_task_ids=frozenset(task for path in dev if path.is_file() for task in _task_ids(path)[0]), datasets=datasets)
    ids: set[str] = set()
    for relative, sha256 in listed:
        path = folder / relative
        try:
            actual = sha256_of(path) if path.is_file() else None
            found, unreadable = _task_ids(path) if actual else (set(), 0)
        except OSError:
            actual, found, unreadable = None, set(), 0
        if actual is None or actual != sha256:
            held.quarantined.append({"source": "datasets", "path": f"processed/datasets/{relative}", "offset": 0,
                                     "length": path.stat().st_size if actual else 0,
                                     "reason": ("test split missing: loop runs on its tasks cannot be held out" if actual is None else
                                                "test split differs from the processed manifest's sha256: its task ids are held out as found") +
                                     "; run `trajforge datasets --stage process` again"})
        ids |= found
        held.files.append({"path": relative, "sha256": actual, "task_ids": len(found), "unreadable_lines": unreadable})
    held.task_ids = frozenset(ids)
    return held


def parent_digest(parent: Path | None) -> str | None:
    """The held-out digest `parent` was built with (a build made before held-out loop runs existed: the empty set's)."""
    if parent is None:
        return None
    try:
        manifest = json.loads((parent / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    return (manifest.get(SECTION) or {}).get("digest", digest_of(set()))


def write_quarantine(stage: Path, held: HeldOut) -> None:
    if held.quarantined:
        (stage / "quarantine").mkdir(parents=True, exist_ok=True)
        (stage / "quarantine" / "held_out.json").write_text(json.dumps(held.quarantined))


def section(build_dir: Path, held: HeldOut, rebuilt: bool) -> dict[str, Any]:
    """The manifest's `held_out_loop`: the ids' digest and files, and the curated loop sessions and sft rows held out, by source."""
    sessions, rows = Counter(), Counter()
    for path in sorted((build_dir / "trajectories").glob("part-*.parquet")):
        table = pq.read_table(path, columns=["source", "exclusion_reason"])
        sessions.update(table.filter(pc.equal(table.column("exclusion_reason"), REASON)).column("source").to_pylist())
    for path in sorted((build_dir / "sft").glob("part-*.parquet")):
        table = pq.read_table(path, columns=["source", "split"])
        rows.update(table.filter(pc.equal(table.column("split"), SPLIT)).column("source").to_pylist())
    return {"task_ids": len(held.task_ids), "digest": held.digest, "files": held.files, "quarantined": len(held.quarantined),
            "loop_sessions_rebuilt": rebuilt,
            "sessions": {source: sessions.get(source, 0) for source in LOOP_SOURCES},
            "sft_rows": {source: rows.get(source, 0) for source in LOOP_SOURCES}}
