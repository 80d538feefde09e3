"""A raw file the build cannot read (a broken link, an I/O error, its permissions) is quarantined whole, with the
reason, and the build goes on; a folder that happens to end in .seg is not a raw file. No Ray needed."""

from __future__ import annotations

import json

import pytest

from pipelines.build.index_stage import _index_one
from pipelines.build.sources import raw_files


@pytest.mark.parametrize("relative, source", [("raw/envelopes/date=2026-12-07/gone-0001.seg", "ingest"),
                                              ("raw/trajectories/gone.jsonl", "trajectories")])
def test_a_file_that_cannot_be_read_is_quarantined_whole(tmp_path, relative, source):
    path = tmp_path / relative
    path.parent.mkdir(parents=True)
    path.symlink_to(tmp_path / "on-a-volume-no-longer-mounted")
    assert raw_files(tmp_path) == {relative: source}
    index, *parts = _index_one(str(tmp_path), relative, source, 3)
    assert parts == [None, None, None] and index.records.num_rows == 0
    assert [(q.source, q.path, q.offset, q.length, q.reason) for q in index.quarantined] == [
        (source, relative, 0, 0, "unreadable: No such file or directory")]


def test_a_folder_named_like_a_segment_is_not_listed(tmp_path):
    (tmp_path / "raw" / "envelopes" / "date=2026-12-07" / "odd.seg").mkdir(parents=True)
    (tmp_path / "raw" / "trajectories" / "odd.jsonl").mkdir(parents=True)
    assert raw_files(tmp_path) == {}


def test_an_events_file_that_cannot_be_read_is_quarantined_whole(tmp_path):
    from pipelines.build.event_rows import read_events

    folder = tmp_path / "raw" / "events" / "org=acme" / "date=2026-12-07" / "type=conversation.turn"
    folder.mkdir(parents=True)
    (folder / "a.jsonl").write_text('{"event_id": "e1", "event": {"type": "conversation.turn"}}\n')
    (folder / "b.jsonl").symlink_to(tmp_path / "on-a-volume-no-longer-mounted")
    quarantined = []
    assert [raw_id for raw_id, _ in read_events(tmp_path, quarantined)] == [f"{folder.relative_to(tmp_path)}/a.jsonl:1"]
    assert quarantined == [{"source": "events", "path": f"{folder.relative_to(tmp_path)}/b.jsonl", "offset": 0, "length": 0,
                            "reason": "unreadable: No such file or directory"}]


def test_a_trajectory_line_holding_a_lone_surrogate_is_quarantined_naming_the_field(tmp_path):
    # JSON can escape a lone surrogate; the record reached the build's tokenizer, whose TypeError stopped the whole build
    from pipelines.build.sources import index_trajectory_file

    folder = tmp_path / "raw" / "trajectories"
    folder.mkdir(parents=True)
    lines = [json.dumps({"task_id": "t1", "step": 1, "model_output": {"raw": "half an emoji \ud83d"}}).encode() + b"\n",
             json.dumps({"task_id": "t2", "step": 1, "model_output": {"raw": "a whole one \U0001f600, escaped as a pair"}}).encode() + b"\n",
             b'{"task_id": "t3", "step": 1, "prompt": "a backslash then ud800: \\\\ud800"}\n']
    (folder / "a.jsonl").write_bytes(b"".join(lines))
    index = index_trajectory_file(str(tmp_path), "raw/trajectories/a.jsonl")
    assert index.records.column("session_id").to_pylist() == ["actor:t2:run", "actor:t3:run"]
    assert [(q.offset, q.length, q.reason) for q in index.quarantined] == [
        (0, len(lines[0]), "a lone UTF-16 surrogate in model_output.raw, which is not text")]
