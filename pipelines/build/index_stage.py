"""The build's first stage: index every raw file in parallel Ray tasks and score every ingest session.

Each ingest segment is read once (`columns.read_segment`): its index (headers and record keys, as
Arrow columns) comes back to the driver; its columns, cut into one part per scoring task by session
(`columns.split`), stay in Ray's object store. The scoring tasks (`columns.stitch_and_score`, one per
CPU the indexing used, each over its share of the sessions) start as soon as the last segment is
read; the driver groups the sessions and chooses what to build meanwhile, then collects the scores.
A file unchanged since the parent build read it is loaded from its staged index instead (`index_reuse`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipelines.build import index_reuse
from pipelines.build.columns import ScoredSessions, SegmentColumns, read_segment, split, stitch_and_score
from pipelines.build.sources import FileIndex, Quarantined, index_trajectory_file
from pipelines.build.staging import file_signature

MAX_SCORING_TASKS = 8


def _system_allocator() -> None:
    """Arrow's default pool (mimalloc) gives a fresh process's first large allocations back and forth to the
    kernel: the scoring task's first pass over 2 million steps took 0.85 s with it, 0.39 s with glibc's."""
    if pa.default_memory_pool().backend_name != "system":
        pa.set_memory_pool(pa.system_memory_pool())


def unreadable(root: str, relative: str, source: str, error: OSError) -> FileIndex:
    """A raw file the build cannot read (its permissions, an I/O error, gone since it was listed): no records, and the
    whole file in the quarantine with the reason, so the build goes on and the manifest says what it left out."""
    try:
        size = (Path(root) / relative).stat().st_size
    except OSError:
        size = 0
    return FileIndex(relative, quarantined=[Quarantined(source, relative, 0, size, f"unreadable: {error.strerror or error}")])


def _index_one(root: str, relative: str, source: str, partitions: int, stage: str | None = None) -> tuple[FileIndex | SegmentColumns | None, ...]:
    _system_allocator()
    try:
        if source != "ingest":
            index, columns = index_trajectory_file(root, relative), None
        else:
            index, columns = read_segment(root, relative)
    except OSError as exc:
        return (unreadable(root, relative, source, exc), *([None] * partitions))
    if stage is not None and index_reuse.reusable(index):
        index_reuse.save(stage, relative, index, columns)
    return _returns(index, columns, partitions)


def _load_one(stage: str, relative: str, source: str, partitions: int) -> tuple[FileIndex | SegmentColumns | None, ...]:
    _system_allocator()
    index, columns = index_reuse.load(stage, relative, source == "ingest")
    return _returns(index, columns, partitions)


def _returns(index: FileIndex, columns: SegmentColumns | None, partitions: int) -> tuple[FileIndex | SegmentColumns | None, ...]:
    """A task's returns: the file's index, then its scoring columns cut into `partitions` (None for a trajectory file)."""
    return (index, *(split(columns, partitions) if columns is not None else [None] * partitions))


def _score_all(paths: list[str], *columns: SegmentColumns | None) -> ScoredSessions:
    _system_allocator()
    return stitch_and_score([(path, part) for path, part in zip(paths, columns) if part is not None])


@dataclass
class IndexedLake:
    """Every raw file's index, in `files` order, and the scoring tasks' results (Ray object refs)."""

    indexes: list[FileIndex]
    scores: list[Any]
    reused: int = 0  # raw files whose index was the parent build's

    def scored(self) -> ScoredSessions:
        import ray

        return ScoredSessions.merge(ray.get(self.scores))


def scoring_tasks(cpus: float) -> int:
    """One scoring task per task of `cpus` CPUs the cluster runs at once, at most MAX_SCORING_TASKS."""
    import ray

    return max(1, min(MAX_SCORING_TASKS, int(ray.cluster_resources().get("CPU", 1) // max(cpus, 1e-3))))


def index_lake(lake_root: str, files: dict[str, str], cpus: float, progress: bool, partitions: int | None = None, *,
               stage: Path | None = None, parent: Path | None = None, build_id: str = "") -> IndexedLake:
    """Index `files` (relative path -> source) in Ray tasks of `cpus` CPUs each; scoring runs on after this returns.
    With a `stage` folder, each file's index is staged there (`index_reuse`), linked from `parent` where the file is unchanged."""
    import ray
    from tqdm import tqdm

    partitions = partitions or scoring_tasks(cpus)
    index_task = ray.remote(_index_one).options(num_cpus=cpus, num_returns=1 + partitions)
    load_task = ray.remote(_load_one).options(num_cpus=cpus, num_returns=1 + partitions)
    folder = None if stage is None else stage / index_reuse.FOLDER
    previous = index_reuse.parent_entries(parent) if folder is not None else {}
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    pending, entries = [], {}
    for relative, source in files.items():
        signature, old = file_signature(Path(lake_root) / relative), previous.get(relative)
        if (old is not None and signature is not None and old["signature"] == signature
                and index_reuse.link_parent(parent, folder, relative, source == "ingest")):
            pending.append(load_task.remote(str(folder), relative, source, partitions))
            entries[relative] = old
        else:
            pending.append(index_task.remote(lake_root, relative, source, partitions, None if folder is None else str(folder)))
            entries[relative] = {"path": relative, "signature": signature, "origin": build_id}
    score_task = ray.remote(_score_all).options(num_cpus=cpus)
    scores = [score_task.remote(list(files), *(returned[1 + part] for returned in pending)) for part in range(partitions)]
    waiting = [returned[0] for returned in pending]
    with tqdm(total=len(waiting), desc="index raw files", unit="file", disable=not progress) as bar:
        while waiting:
            done, waiting = ray.wait(waiting, num_returns=min(len(waiting), 16), timeout=1.0)
            bar.update(len(done))
    indexes = ray.get([returned[0] for returned in pending])
    reused = sum(1 for entry in entries.values() if entry["origin"] != build_id)
    if folder is not None:  # what a later build may link: files read whole, and those linked here
        index_reuse.write_entries(folder, [entries[index.path] for index in indexes if entries[index.path]["origin"] != build_id
                                           or (entries[index.path]["signature"] is not None and index_reuse.reusable(index))])
    return IndexedLake(indexes, scores, reused)
