"""An incremental build reads only the raw files that changed since its parent build: the lake's index (envelope segments,
trajectory JSON lines) and the telemetry events' rows of an unchanged file are the parent's, and its tables still equal a
full build's byte for byte, after new files, appends to existing ones, files truncated or rewritten, and a tombstone.

The raw lake is written by the ingest service's own writers (segments, event store, trajectory writer), no Serve needed."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
from build_lake import ELIGIBLE, crafted_steps, teacher_record

from pipelines.build import load_build_settings, run_build
from serve_apps.ingest.events import EventStore
from trajforge import tombstones
from trajforge.contracts.events import parse_event
from trajforge.lake import Lake
from trajforge.raw_segments import SegmentWriter, encode_frame

pytestmark = pytest.mark.usefixtures("serve_url")  # the session's one local Ray, which the builds join

DAY = 1_796_000_000.0  # 2026-11-30
CONTRIBUTORS = ["a" * 32, "b" * 32, "c" * 32]


def settings_for(lake: Path):
    return load_build_settings(assignments=[("build.lake", str(lake)), ("build.cpus_per_task", 0.05), ("build.embedding.enabled", False),
                                            ("build.sessions_per_batch", 4), ("build.open_session_grace_s", 10 ** 9)])


def session_frames(name: str, contributor: str, *, close: bool = True) -> list[bytes]:
    """One field session's envelopes (a chunk, then its close), framed as the ingest service writes them."""
    rng = random.Random(name)
    kinds, tokens, spacing = ELIGIBLE
    steps = crafted_steps(name, kinds + ["action", "observation"] * rng.randint(0, 3), tokens, spacing, DAY)
    bodies = [("CHUNK", {"session_id": name, "chunk_sequence": 0, "contributor_id": contributor, "trajectory_log": steps,
                         "metadata": {"provider": "codex", "model_engine": rng.choice(["gpt-5.5", "o3"]), "task_complexity": "light"}})]
    if close:
        bodies.append(("SESSION_CLOSE", {"session_id": name, "type": "SESSION_CLOSE", "contributor_id": contributor, "outcome": {"status": "SUCCESS"}}))
    return [encode_frame({"envelope_id": f"env-{name}-{kind}", "session_id": name, "kind": kind, "received_at": "2026-11-30T12:00:00Z",
                          "contributor_id": contributor}, json.dumps(body).encode()) for kind, body in bodies]


def append_segment(lake: Path, name: str, frames: list[bytes]) -> list[int]:
    writer = SegmentWriter(lake / "raw" / "envelopes" / "date=2026-11-30" / name)
    try:
        offsets = writer.append(frames)
        writer.sync()
    finally:
        writer.close()
    return offsets


def append_sessions(lake: Path, segment: str, names: list[str], **close) -> list[int]:
    """Append whole sessions to a segment (made if new); returns the offset each session starts at."""
    starts = []
    for number, name in enumerate(names):
        starts += append_segment(lake, segment, session_frames(name, CONTRIBUTORS[number % len(CONTRIBUTORS)], **close))[:1]
    return starts


def append_steps(lake: Path, name: str, *records: dict) -> None:
    path = lake / "raw" / "trajectories" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write("".join(json.dumps(record) + "\n" for record in records))


def turn(event_id: str, contributor: str = CONTRIBUTORS[0], answer: str = "done") -> dict:
    return {"event_id": event_id, "event_type": "conversation.turn", "org_id": "acme", "session_id": f"chat-{event_id[:2]}", "contributor_id": contributor,
            "payload": {"user_message": f"work on {event_id}", "assistant_message": answer}}


def store_events(lake: Path, writer: str, *raws: dict) -> None:
    events = EventStore(Lake.at(lake), writer)
    try:
        events.store([(parse_event(raw), raw) for raw in raws], "test", now=DAY)
    finally:
        events.close()


def events_file(lake: Path, writer: str, kind: str = "conversation.turn") -> Path:
    return lake / "raw" / "events" / "org=acme" / "date=2026-11-30" / f"type={kind}" / f"{writer}.jsonl"


def phase_one(lake: Path) -> dict[str, list[int]]:
    starts = {"w1-000001.seg": append_sessions(lake, "w1-000001.seg", [f"s1-{n}" for n in range(6)]),
              "w1-000002.seg": append_sessions(lake, "w1-000002.seg", [f"s2-{n}" for n in range(6)])}
    append_sessions(lake, "w1-000003.seg", ["late"], close=False)  # open: its close comes in phase two, in another segment
    append_steps(lake, "teacher0.jsonl", teacher_record("t1", "r1", 1, valid=False, gold=None, final=False),
                 teacher_record("t2", "r1", 1, valid=True, gold=True, final=True))
    append_steps(lake, "teacher1.jsonl", teacher_record("t3", "r1", 1, valid=True, gold=True, final=True))
    store_events(lake, "w2", *(turn(f"t{n}-a") for n in range(4)))
    store_events(lake, "w2", {"event_id": "e1", "event_type": "model.error", "org_id": "acme", "payload": {"code": "rate_limited", "message": "slow down"}},
                 {"event_id": "b1", "event_type": "model.behavior", "org_id": "acme", "payload": {"behavior": "tool_loop", "tool": "read_file"}})
    return starts


def hashes(manifest: dict) -> dict[str, str]:
    return {entry["path"]: entry["sha256"] for entry in manifest["files"]}


def build(lake: Path, **kwargs) -> dict:
    return run_build(settings_for(lake), progress=False, **kwargs)


def test_new_files_and_appends_reuse_the_unchanged_files_and_equal_a_full_build(tmp_path):
    lake = tmp_path / "lake"
    phase_one(lake)
    first = build(lake, full=True)
    assert first["raw_index"] == {"files": 5, "files_read": 5, "files_reused": 0, "reused_from": None}

    append_sessions(lake, "w1-000002.seg", ["s2-new"])  # a segment that grew
    append_sessions(lake, "w1-000004.seg", ["s4-0", "s4-1"])  # a new one
    append_segment(lake, "w1-000004.seg", session_frames("late", CONTRIBUTORS[0])[1:])  # closes the session open in w1-000003
    append_steps(lake, "teacher0.jsonl", teacher_record("t1", "r1", 2, valid=True, gold=True, final=True))  # closes run t1
    append_steps(lake, "actor0.jsonl", {**teacher_record("t4", "r2", 1, valid=True, gold=True, final=True), "teacher": None})
    store_events(lake, "w2", turn("t9-b"))  # appended to w2's file
    store_events(lake, "w3", turn("t8-c"))  # a new file
    error = events_file(lake, "w2", "model.error")  # unchanged, but a retried copy of its event lands in a file sorting before it:
    events_file(lake, "w1", "model.error").write_bytes(error.read_bytes())  # its own line is now the repeat, its rows made again

    incremental = build(lake)
    assert incremental["parent_build_id"] == first["build_id"]
    assert incremental["raw_index"] == {"files": 7, "files_read": 4, "files_reused": 3, "reused_from": first["build_id"]}
    section = incremental["telemetry"]
    assert (section["files"], section["files_staged"], section["files_reused"], section["reused_from"]) == (5, 4, 1, first["build_id"])
    assert section["duplicates"] == 1 and section["events"] == 8
    assert incremental["sessions"]["built"] == 6 and incremental["sessions"]["reused"] == 14

    full = build(lake, full=True)
    assert full["telemetry"]["files_reused"] == 0 and full["raw_index"]["files_reused"] == 0
    assert hashes(incremental) == hashes(full)
    assert {key: incremental[key] for key in ("rows", "inputs", "quarantine", "tiers")} == {key: full[key] for key in ("rows", "inputs", "quarantine", "tiers")}

    again = build(lake)  # nothing changed: every file is reused, from the build that read it
    assert again["raw_index"]["files_reused"] == 7 and again["telemetry"]["files_reused"] == 5 and hashes(again) == hashes(full)


def rewrite(path: Path, old: str, new: str) -> None:
    """Rewrite a raw file in place, its size and mtime put back (as a restore that keeps times could): only its ctime tells."""
    before = path.stat()
    path.write_text(path.read_text().replace(old, new))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def test_a_file_truncated_or_rewritten_under_the_parent_is_read_again(tmp_path):
    lake = tmp_path / "lake"
    starts = phase_one(lake)
    first = build(lake, full=True)

    segment = lake / "raw" / "envelopes" / "date=2026-11-30" / "w1-000002.seg"
    os.truncate(segment, starts["w1-000002.seg"][-1])  # its last session cut off at a frame boundary, as recovery cuts a tail
    rewrite(lake / "raw" / "trajectories" / "teacher1.jsonl", '"task_id": "t3"', '"task_id": "t7"')  # another run now
    rewrite(events_file(lake, "w2"), '"assistant_message":"done"', '"assistant_message":"DONE"')

    changed = build(lake)
    assert changed["parent_build_id"] == first["build_id"]
    assert (changed["raw_index"]["files_read"], changed["raw_index"]["files_reused"]) == (2, 3)
    assert (changed["telemetry"]["files_staged"], changed["telemetry"]["files_reused"]) == (1, 2)
    full = build(lake, full=True)
    assert hashes(changed) == hashes(full) and changed["rows"]["trajectories"] == first["rows"]["trajectories"] - 1

    tombstones.forget(Lake.at(lake), CONTRIBUTORS[1])  # a forgotten contributor: nothing staged before is reused
    forgotten = build(lake)
    assert forgotten["parent_build_id"] is None and forgotten["sessions"]["forgotten"] > 0
    assert forgotten["raw_index"]["files_reused"] == 0 and forgotten["telemetry"]["files_reused"] == 0
    assert hashes(forgotten) == hashes(build(lake, full=True))
