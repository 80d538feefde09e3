"""Appenders of JSON lines on a disk that fills up mid-record (injected: CI cannot mount a small tmpfs). A full disk
takes part of a write (a short write, no error), then refuses the rest: the record must raise, not pass for written,
and leave no half line for the next record to run into once space is back."""

from __future__ import annotations

import errno
import json
import os

import pytest

from pipelines.synth_records.results import ResultsWriter, read_results
from trajforge.trajectories import RECORD_FIELDS, TrajectoryWriter, read_trajectories


class FillingDisk:
    """Once `fill()`ed, the next write takes half its bytes and every write after it fails with ENOSPC, until
    `space_back()`."""

    def __init__(self, monkeypatch):
        self.monkeypatch, self.calls = monkeypatch, 0

    def fill(self) -> None:
        real_write = os.write

        def write(fd, data):
            self.calls += 1
            if self.calls == 1:
                return real_write(fd, bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        self.monkeypatch.setattr("trajforge.raw_segments.os.write", write)

    def space_back(self) -> None:
        self.monkeypatch.undo()


@pytest.fixture
def disk(monkeypatch):
    return FillingDisk(monkeypatch)


def _record(step: int) -> dict:
    return {**{name: None for name in RECORD_FIELDS}, "task_id": "t1", "step": step, "model_output": "x" * 300}


def test_a_trajectory_record_the_disk_took_half_of_raises_and_leaves_no_half_line(tmp_path, disk):
    writer = TrajectoryWriter(tmp_path, "teacher0")
    writer.append(_record(1))
    before = writer.path.read_bytes()
    disk.fill()
    with pytest.raises(OSError) as full:
        writer.append(_record(2))
    assert full.value.errno == errno.ENOSPC
    disk.space_back()
    assert writer.path.read_bytes() == before
    writer.append(_record(3))
    writer.close()
    assert [record["step"] for record in read_trajectories(tmp_path)] == [1, 3]


def test_a_synthetic_record_the_disk_took_half_of_raises_and_is_not_counted_done(tmp_path, disk):
    path = tmp_path / "peer-0.jsonl"
    with ResultsWriter(path) as writer:
        writer.append({"i": 0, "record": {"a": 1}})
        disk.fill()
        with pytest.raises(OSError):
            writer.append({"i": 1, "record": {"a": "y" * 300}})
        disk.space_back()
        writer.append({"i": 1, "record": {"a": 2}})  # not counted done: the same record is taken once space is back
        writer.append({"i": 2, "record": {"a": 3}})
    assert sorted(read_results(path)) == [0, 1, 2]
    assert all(json.loads(line) for line in path.read_bytes().splitlines())
