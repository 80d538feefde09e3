"""The build's columnar stitch and score agree with the per-session stitcher and scorer, bad bodies included."""

from __future__ import annotations

import json

import pytest

from pipelines.build import sources
from pipelines.build.columns import ScoredSessions, partition_of, read_segment, split, stitch_and_score
from pipelines.build.sessions import group_sessions
from trajforge.raw_segments import SegmentWriter, decode_frame, encode_frame
from trajforge.scoring import score
from trajforge.stitch import stitch


def _step(number, kind, tokens=7):
    return {"step": number, "type": kind, "timestamp": 1.0 + number, "content": f"{kind} {number}", "token_count": tokens}


def _chunk(session, sequence, steps, metadata=None):
    return {"session_id": session, "chunk_sequence": sequence, "contributor_id": "c1", "metadata": metadata or {}, "trajectory_log": steps}


def _close(session, metadata=None):
    return {"session_id": session, "type": "SESSION_CLOSE", "contributor_id": "c1", "metadata": metadata or {}, "outcome": {"status": "SUCCESS"}}


def _write(path, envelopes, received_at="2026-11-23T00:00:00Z"):
    writer = SegmentWriter(path)
    frames = []
    for number, (session, body) in enumerate(envelopes):
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        received = received_at[number] if isinstance(received_at, list) else received_at
        header = {"envelope_id": f"env-{path.stem}-{number}", "session_id": session, "kind": "CHUNK", "received_at": received, "contributor_id": "c1"}
        frames.append(encode_frame(header, raw))
    writer.append(frames)
    writer.sync()
    writer.close()


@pytest.fixture
def lake(tmp_path):
    folder = tmp_path / "raw" / "envelopes" / "date=2026-11-23"
    folder.mkdir(parents=True)
    pretty = json.dumps(_chunk("a", 0, [_step(1, "thought"), _step(2, "error"), _step(3, "correction")]), indent=2).encode()
    _write(folder / "1.seg", [
        ("a", _chunk("a", 2, [_step(6, "resolution"), _step(5, "coordination")])),
        ("b", _chunk("b", 0, [_step(1, "thought"), {**_step(2, "action"), "step": "2"}])),
        ("c", b"{not json"),
        ("c", _chunk("c", 0, [_step(1, "error"), _step(2, "resolution")], {"model_engine": "o3", "task_complexity": "heavy"})),
        ("d", _chunk("d", 0, [{"type": "thought"}])),
        ("e", _close("e", {"model_engine": "o3"})),
        ("f", json.dumps(_chunk("f", 0, [{**_step(1, "thought"), "content": "half an emoji \ud83d"}])).encode()),  # JSON.stringify's escape
    ])
    _write(folder / "2.seg", [
        ("a", pretty),
        ("a", _chunk("a", 1, [_step(3, "observation"), _step(4, "error"), _step(2, "action")])),
        ("a", _close("a", {"model_engine": "o4-mini", "task_complexity": "heavy"})),
        ("c", _close("c")),
    ])
    return tmp_path


def _per_session(lake, refs):
    envelopes = []
    for relative, _, offset, length in refs:
        frame = decode_frame(sources.read_bytes(str(lake), relative, offset, length))
        try:
            envelopes.append(json.loads(frame.body))
        except ValueError:
            continue
    return envelopes


def test_columnar_scores_equal_the_per_session_ones_and_bad_sessions_say_why(lake):
    files = sources.raw_files(lake)
    read = [read_segment(str(lake), relative) for relative in files]
    sessions = group_sessions([index for index, _ in read], files).select()
    scored = stitch_and_score([(index.path, columns) for index, columns in read])

    assert sorted(scored.session_ids) == ["a", "c", "e"]
    assert "wrong type" in scored.unscorable["b"] and "step number" in scored.unscorable["d"]
    assert scored.unscorable["f"] == "envelope env-1-6 holds a lone UTF-16 surrogate in trajectory_log.0.content, which is not text"
    for index, session in enumerate(scored.session_ids):
        stitched = stitch(session, _per_session(lake, sessions[session].refs))
        assert scored.score(index) == score(stitched), session
        assert scored.total_tokens[index] == stitched.total_tokens
    a = scored.session_ids.index("a")
    assert scored.columns["steps"][a] == 8 and scored.models[a] == "o4-mini"  # steps 2 and 3 twice: both copies count  # the first chunk has no model: the close's fills it
    assert scored.columns["complexity_bonus"][a] == 8 and scored.columns["errors_recovered"][a] == 2
    table = scored.table()
    assert table.column("session_id").to_pylist() == ["a", "c", "e"] and table.column("total_steps").to_pylist() == [8, 2, 0]


def test_the_careful_index_path_gives_the_fast_paths_index(lake, monkeypatch):
    relative = next(iter(sources.raw_files(lake)))
    fast_index, fast_frames = sources.indexed_frames(str(lake), relative)
    monkeypatch.setattr(sources, "scan_clean", lambda path: None)
    careful_index, careful_frames = sources.indexed_frames(str(lake), relative)
    assert fast_index == careful_index and fast_frames == careful_frames and len(fast_frames) == 7


def test_a_header_the_one_call_parse_cannot_read_takes_the_careful_path(tmp_path):
    path = tmp_path / "raw" / "envelopes" / "x.seg"
    path.parent.mkdir(parents=True)
    _write(path, [("a", _chunk("a", 0, [_step(1, "thought")]))], received_at=1_800_000_000)
    index, frames = sources.indexed_frames(str(tmp_path), "raw/envelopes/x.seg")
    assert index.records.column("seen").to_pylist() == [1_800_000_000.0] and len(frames) == 1


@pytest.mark.parametrize("times", [
    ["2026-11-23T00:00:00.123456Z", "2026-11-23T01:02:03+02:00", "2026-11-22T23:59:59.999999+00:00"],
    ["2026-11-23T00:00:00Z", "2026-11-23 01:02:03", "not a time"],  # one the Arrow cast cannot read: every value parsed alone
])
def test_the_fast_path_reads_receive_times_as_the_careful_one_does(tmp_path, monkeypatch, times):
    path = tmp_path / "raw" / "envelopes" / "x.seg"
    path.parent.mkdir(parents=True)
    _write(path, [("a", _chunk("a", number, [_step(1, "thought")])) for number in range(3)], received_at=times)
    fast_index, _ = sources.indexed_frames(str(tmp_path), "raw/envelopes/x.seg")
    monkeypatch.setattr(sources, "scan_clean", lambda path: None)
    careful_index, _ = sources.indexed_frames(str(tmp_path), "raw/envelopes/x.seg")
    assert fast_index.records.column("seen").to_pylist() == careful_index.records.column("seen").to_pylist()
    assert fast_index.records.column("seen")[0].as_py() > 1.7e9


@pytest.mark.parametrize("partitions", [2, 3, 7])
def test_scoring_split_by_session_gives_what_one_task_gives(lake, partitions):
    files = sources.raw_files(lake)
    read = [read_segment(str(lake), relative) for relative in files]
    whole = stitch_and_score([(index.path, columns) for index, columns in read])
    cut = [split(columns, partitions) for _, columns in read]
    for part_number in range(partitions):  # every part holds only its own sessions, the same in every segment
        for parts in cut:
            part = parts[part_number]
            keys = set(part.envelopes.column("session_id").to_pylist()) | set(part.unscorable)
            assert all(partition_of(key, partitions) == part_number for key in keys)
    merged = ScoredSessions.merge([stitch_and_score([(index.path, parts[number]) for (index, _), parts in zip(read, cut)])
                                   for number in range(partitions)])
    assert merged.unscorable == whole.unscorable
    assert sorted(merged.session_ids) == sorted(whole.session_ids)
    assert merged.table().equals(whole.table())


def test_sessions_are_grouped_over_files_in_file_order(tmp_path):
    folder = tmp_path / "raw" / "envelopes" / "date=2026-11-23"
    folder.mkdir(parents=True)
    _write(folder / "2.seg", [("a", _close("a")), ("b", _chunk("b", 1, []))], received_at=["2026-11-23T00:00:05Z", "2026-11-23T00:00:09Z"])
    _write(folder / "1.seg", [("b", _chunk("b", 0, [])), ("a", _chunk("a", 0, []))], received_at=["2026-11-23T00:00:07Z", "2026-11-23T00:00:01Z"])
    trajectories = tmp_path / "raw" / "trajectories"
    trajectories.mkdir(parents=True)
    (trajectories / "t.jsonl").write_text("\n".join(json.dumps(record) for record in [
        {"task_id": "t1", "run_id": "r", "teacher": True, "created_at": 3.0},
        {"task_id": "t1", "run_id": "r", "teacher": True, "final": True, "created_at": 4.0},
        {"task_id": "t2", "created_at": 2.0},
    ]) + "\n")
    files = sources.raw_files(tmp_path)
    indexes = [sources.indexed_frames(str(tmp_path), path)[0] if source == "ingest" else sources.index_trajectory_file(str(tmp_path), path)
               for path, source in files.items()]
    lake_sessions = group_sessions(indexes, files)
    assert len(lake_sessions) == 4
    sessions = lake_sessions.select()
    a, b = sessions["a"], sessions["b"]
    assert [(ref[0].rsplit("/", 1)[1], ref[1]) for ref in a.refs] == [("1.seg", "env-1-1"), ("2.seg", "env-2-0")]
    assert [ref[1] for ref in b.refs] == ["env-1-0", "env-2-1"]
    assert b.refs[0][2] == 0 and a.refs[0][2] == b.refs[0][3] and a.refs[1][2] == 0  # offsets: each file's frames back to back
    assert (a.source, a.closed, a.contributor_id, b.closed) == ("ingest", False, "c1", False)  # a kind CHUNK header is no close
    assert a.last_seen == pytest.approx(1_795_392_005.0) and b.last_seen == pytest.approx(1_795_392_009.0)
    teacher, actor = sessions["teacher:t1:r"], sessions["actor:t2:run"]
    assert (teacher.source, teacher.closed, teacher.last_seen, len(teacher.refs)) == ("teacher", True, 4.0, 2)
    assert (actor.source, actor.closed, actor.contributor_id) == ("actor", False, None)
    only_closed = lake_sessions.select(lake_sessions.closed)
    assert list(only_closed) == ["teacher:t1:r"] and only_closed["teacher:t1:r"].refs == teacher.refs
    assert a.fingerprint != b.fingerprint and a.fingerprint == group_sessions(indexes[::-1], files).select()["a"].fingerprint
