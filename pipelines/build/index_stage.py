"""The build's first stage: index every raw file in parallel Ray tasks and score every ingest session.

Each ingest segment is read once (`columns.read_segment`): its index (headers and record keys) comes
back to the driver, its columns stay in Ray's object store for one scoring task
(`columns.stitch_and_score` over every session), which Ray starts as soon as the last segment is
read; the driver groups the sessions and chooses what to build meanwhile, then collects the scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipelines.build.columns import ScoredSessions, SegmentColumns, read_segment, stitch_and_score
from pipelines.build.sources import FileIndex, index_trajectory_file


def _index_one(root: str, relative: str, source: str) -> tuple[FileIndex, SegmentColumns | None]:
    return read_segment(root, relative) if source == "ingest" else (index_trajectory_file(root, relative), None)


def _score_all(paths: list[str], *columns: SegmentColumns | None) -> ScoredSessions:
    return stitch_and_score([(path, part) for path, part in zip(paths, columns) if part is not None])


@dataclass
class IndexedLake:
    """Every raw file's index, in `files` order, and the scoring task's result (a Ray object ref)."""

    indexes: list[FileIndex]
    scores: Any

    def scored(self) -> ScoredSessions:
        import ray

        return ray.get(self.scores)


def index_lake(lake_root: str, files: dict[str, str], cpus: float, progress: bool) -> IndexedLake:
    """Index `files` (relative path -> source) in Ray tasks of `cpus` CPUs each; scoring runs on after this returns."""
    import ray
    from tqdm import tqdm

    index_task = ray.remote(_index_one).options(num_cpus=cpus, num_returns=2)
    pending = [index_task.remote(lake_root, relative, source) for relative, source in files.items()]
    scores = ray.remote(_score_all).options(num_cpus=cpus).remote(list(files), *(columns for _, columns in pending))
    waiting = [index for index, _ in pending]
    with tqdm(total=len(waiting), desc="index raw files", unit="file", disable=not progress) as bar:
        while waiting:
            done, waiting = ray.wait(waiting, num_returns=min(len(waiting), 16), timeout=1.0)
            bar.update(len(done))
    return IndexedLake(ray.get([index for index, _ in pending]), scores)
