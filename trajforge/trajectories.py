"""The trajectory store (specification section 7): step records as JSON lines under `lake/raw/trajectories/`.

Writers (actor loops, teacher jobs) each append to their own file and fsync every record, so a killed
process loses at most the line it was writing; readers skip a torn last line and count it. A writer holds
an exclusive `flock` on its file from its first record until it closes or its process ends, as the ingest
service's segment writers do, so a build can tell a torn line a crash left (quarantined) from a line being
written (left for the next build). The build pipeline turns these records into Parquet.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trajforge.raw_segments import append_whole

RECORD_FIELDS = ("task_id", "step", "prompt", "state_before", "model_output", "sandbox_result", "reward")


REWARD_LABELS = ("verified", "matches_gold", "tests_pass")


def reward_labels(record: dict[str, Any]) -> dict[str, Any]:
    """A record's reward labels (seed 002 8.2: `verified`, and where known `matches_gold`, `tests_pass`): its `reward`
    object; `{}` for none (section 7's `"reward": null`, before labels exist); a bare boolean or number, as RL records
    often carry one, is `verified` (a number when positive). Any other `reward` is a ValueError naming the shapes."""
    reward = record.get("reward")
    if reward is None:
        return {}
    if isinstance(reward, dict):
        return reward
    if isinstance(reward, (bool, int, float)):
        return {"verified": reward > 0}
    raise ValueError(f"reward must be an object of labels {{{', '.join(REWARD_LABELS)}}}, a boolean, a number or null; got "
                     f"{type(reward).__name__} {str(reward)[:80]!r}")


def good_step(record: dict[str, Any]) -> bool:
    """A step with all three rewards: its action applied cleanly (`verified`), and the code equals the known result
    and the tests pass wherever those are known. What becomes an sft row, and what the teacher report's precision counts."""
    reward = reward_labels(record)
    return bool(reward.get("verified")) and reward.get("matches_gold") is not False and reward.get("tests_pass") is not False


class TrajectoryWriter:
    """Appends records to `<root>/<writer>-<host>-<pid>-<time>.jsonl` (one file per writer process)."""

    def __init__(self, root: str | Path, writer: str):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        name = f"{writer}-{socket.gethostname()}-{os.getpid()}-{int(time.time() * 1000)}.jsonl"
        self.path = self.root / name
        self._lock = threading.Lock()
        self._fd: int | None = None  # opened, and locked, at the first record: an idle writer leaves no empty file

    def append(self, record: dict[str, Any]) -> None:
        missing = [name for name in RECORD_FIELDS if name not in record]
        if missing:
            raise ValueError(f"trajectory record lacks {missing}")
        line = (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
        with self._lock:
            if self._fd is None:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    pass  # a filesystem without flock: builds then take every torn line for a write in progress
                self._fd = fd
            append_whole(self._fd, line)  # a line the disk took only half of is cut back off, and raises

    def close(self) -> None:
        """Release the file (and its lock); a later `append` opens it again."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


@dataclass
class ReadStats:
    records: int = 0
    corrupt_lines: int = 0


def read_trajectories(root: str | Path, stats: ReadStats | None = None) -> Iterator[dict[str, Any]]:
    """Every record under `root`, file by file in name order; unreadable lines are counted in `stats`."""
    stats = stats if stats is not None else ReadStats()
    for path in sorted(Path(root).glob("*.jsonl")):
        with path.open("rb") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                except ValueError:
                    stats.corrupt_lines += 1
                    continue
                if isinstance(record, dict):
                    stats.records += 1
                    yield record
                else:
                    stats.corrupt_lines += 1
