"""A peer's results: `<job>/peers/<peerId>.jsonl`, one line per record, `{i, ok, data}` or `{i, ok: false, error}`
(seed 001's peer results), appended and fsync'd record by record so that a killed run loses at most the line it was
writing. The writer holds an exclusive flock on `<peerId>.lock` while it appends: a resumed run's peer waits until a
killed run's worker is gone (its lock dropped with its process), then cuts a torn last line and goes on after the
records already there; no index is generated twice or lost."""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

from trajforge.errors import TrajforgeError
from trajforge.raw_segments import append_whole


class ResultsBusy(TrajforgeError, RuntimeError):
    """Another live process still appends to this peer's results."""


def read_results(path: Path) -> dict[int, dict[str, Any]]:
    """Index -> its record, the first line of each index (a complete line only: a torn last one is skipped)."""
    records: dict[int, dict[str, Any]] = {}
    if not path.exists():
        return records
    for line in path.read_bytes().split(b"\n"):
        try:
            record = json.loads(line)
        except ValueError:
            continue  # the torn tail (no newline yet), or nothing
        if isinstance(record, dict) and isinstance(record.get("i"), int):
            records.setdefault(record["i"], record)
    return records


class ResultsWriter:
    """The one appender of a peer's results file, for as long as it is open."""

    def __init__(self, path: Path, wait_s: float = 60.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = os.open(self.path.with_suffix(".lock"), os.O_WRONLY | os.O_CREAT, 0o644)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(self._lock)
                    raise ResultsBusy(f"{self.path} is still being written by another process (waited {wait_s:g} s)") from None
                time.sleep(0.2)
        self._cut_torn_tail()
        self.done = read_results(self.path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def _cut_torn_tail(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        keep = data.rfind(b"\n") + 1
        if keep != len(data):
            with open(self.path, "r+b") as handle:
                handle.truncate(keep)
                handle.flush()
                os.fsync(handle.fileno())

    def append(self, record: dict[str, Any]) -> None:
        if record["i"] in self.done:
            raise ValueError(f"record {record['i']} is already in {self.path}")
        append_whole(self._fd, (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8"))
        self.done[record["i"]] = record

    def close(self) -> None:
        os.close(self._fd)
        os.close(self._lock)

    def __enter__(self) -> ResultsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
