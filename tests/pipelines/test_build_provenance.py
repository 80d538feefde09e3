"""Seed 003's provenance events in the build: the curated `provenance` table (agent actions, outcomes folded in, orphans
kept and counted, tombstones honoured, a damaged line quarantined), the labels on the rows that name a commit, and the
incremental build reusing unchanged raw files and relabelling reused rows when new provenance arrives.

The raw lake is written by the ingest service's own stores (no Serve needed) and a segment writer."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from pipelines import lake_stats
from pipelines.build import load_build_settings, run_build
from pipelines.build.provenance_labels import Labeller, same_repo
from pipelines.build.provenance_rows import parse_file
from pipelines.build.provenance_stage import fold
from serve_apps.ingest.events import EventStore
from serve_apps.ingest.provenance_store import ProvenanceStore
from trajforge import tombstones
from trajforge.cli.build_cmd import summary
from trajforge.contracts.curated import PROVENANCE_ACTIONS
from trajforge.contracts.events import parse_event
from trajforge.contracts.provenance import parse_provenance
from trajforge.lake import Lake
from trajforge.raw_segments import SegmentWriter, encode_frame

pytestmark = pytest.mark.usefixtures("serve_url")  # the session's one local Ray, which the builds join

SHA = "9fceb02d0ae598e95dc970b74767f19372d61af8"
FORGOTTEN = "f" * 32
KEY = "AKIA4KXZ7QF3N2WD8PLM"
DAY = 1_796_000_000.0  # 2026-11-30


def action(commit: str, repo: str, **extra) -> dict:
    return {"event_type": "agent_action", "actor_type": "agent", "actor_id": "cursor-v1", "tool": "refactor", "intent": f"refactor {repo}",
            "model": "gpt-4", "files_written": ["src/auth.py"], "timestamp": "2026-11-30T12:00:00Z", "repo": repo, "commit": commit, **extra}


def outcome(original: str, status: str, linked: str | None = None) -> dict:
    return {"event_type": "outcome", "original_event_id": original, "status": status, **({"linked_commit": linked} if linked else {})}


def store(provenance: ProvenanceStore, *raws: dict, now: float = DAY, customer: str = "acme") -> list[str]:
    return provenance.store([(parse_provenance(raw), raw) for raw in raws], customer, "tok1", "test", now=now)


def turn(event_id: str, **payload) -> dict:
    return {"event_id": event_id, "event_type": "conversation.turn", "org_id": "acme", "session_id": event_id,
            "payload": {"user_message": f"work on {event_id}", "assistant_message": "done", **payload}}


def write_session(lake: Path, metadata: dict) -> None:
    """One closed, eligible field session whose envelope metadata names a repository and a commit."""
    kinds = ["instruction", "action", "observation", "action", "observation", "resolution"]
    steps = [{"step": n + 1, "type": kind, "timestamp": DAY + 5 * n, "content": f"{kind} {n} " + "word " * 60, "token_count": 200,
              **({"tool": "command_execution", "arguments": {"command": f"make check-{n}"}} if kind == "action" else {})}
             for n, kind in enumerate(kinds)]
    chunk = {"session_id": "field-1", "chunk_sequence": 0, "contributor_id": "c" * 32, "trajectory_log": steps,
             "metadata": {"provider": "codex", "model_engine": "gpt-5.5", "task_complexity": "light", **metadata}}
    close = {"session_id": "field-1", "type": "SESSION_CLOSE", "contributor_id": "c" * 32, "outcome": {"status": "SUCCESS"}}
    path = lake / "raw" / "envelopes" / "date=2026-11-30" / "w1-000001.seg"
    path.parent.mkdir(parents=True)
    writer = SegmentWriter(path)
    writer.append([encode_frame({"envelope_id": f"env-{n}", "session_id": "field-1", "kind": kind, "received_at": "2026-11-30T12:00:00Z",
                                 "contributor_id": "c" * 32}, json.dumps(body).encode())
                   for n, (kind, body) in enumerate([("CHUNK", chunk), ("SESSION_CLOSE", close)])])
    writer.sync()
    writer.close()


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    root = tmp_path_factory.mktemp("provenance") / "lake"
    the_lake = Lake.at(root)
    main, other = ProvenanceStore(the_lake, "w1"), ProvenanceStore(the_lake, "w2")
    ids = {}
    ids["a1"], ids["a2"], ids["a3"] = store(main, action(SHA, "api", intent=f"rotate {KEY}"), action("abc1234f", "web"), action("deadbeef", "api"))
    store(main, outcome(ids["a1"], "rejected"), now=DAY + 10)
    store(main, outcome(ids["a1"].upper(), "accepted", "0123abcd"), outcome(ids["a3"], "superseded", "feedface01"), now=DAY + 20)
    ids["lost"], = store(other, action("c0ffee00", "api"), now=DAY + 30)  # line 1 of w2's file: damaged below
    ids["kept"], = store(other, action("c0ffee11", "api"), now=DAY + 31)
    store(main, outcome(ids["lost"], "accepted"), now=DAY + 40)  # its action will be missing: an orphan
    ids["gone"], = store(main, action("bada55", "api", user_id=FORGOTTEN), now=DAY + 50)
    store(main, outcome(ids["gone"], "rejected"), now=DAY + 60)
    main.close(), other.close()
    tombstones.forget(the_lake, FORGOTTEN)
    damaged = next((root / "raw" / "provenance").rglob("w2.jsonl"))
    data = bytearray(damaged.read_bytes())
    data[5:15] = b"#" * 10
    damaged.write_bytes(bytes(data))
    events = EventStore(the_lake, "w1")
    raws = [turn("t-full", commit="9fceb02", repo="github.com/acme/api"), turn("t-linked", commit="FEEDFACE01"),
            turn("t-other-repo", commit="deadbeef", repo="acme/web"), turn("t-none")]
    events.store([(parse_event(raw), raw) for raw in raws], "test", now=DAY)
    events.close()
    write_session(root, {"repo": "acme/web", "commit": "ABC1234F"})
    return root, ids


def settings_for(lake):
    return load_build_settings(assignments=[("build.lake", str(lake)), ("build.cpus_per_task", 0.05), ("build.embedding.enabled", False),
                                            ("build.open_session_grace_s", 10 ** 9)])


def rows(build_dir, name):
    return duckdb.sql(f"SELECT * FROM read_parquet('{build_dir / name}/*.parquet')").to_arrow_table().to_pylist()


@pytest.fixture(scope="module")
def built(lake):
    root, ids = lake
    manifest = run_build(settings_for(root), progress=False)
    return root, ids, manifest, Lake.at(root).build_dir(manifest["build_id"])


def test_actions_with_their_outcomes_folded_in_and_an_orphan_kept(built):
    _, ids, manifest, build_dir = built
    table = {row["event_id"]: row for row in rows(build_dir, "provenance")}
    assert set(table) == {ids[name] for name in ("a1", "a2", "a3", "kept", "lost")}  # the forgotten action and its outcome are out
    first = table[ids["a1"]]
    assert (first["outcome"], first["outcome_count"], first["linked_commit"]) == ("accepted", 2, "0123abcd")
    assert [item["status"] for item in first["outcomes"]] == ["rejected", "accepted"] and first["action_found"]
    assert (first["commit"], first["repo"], first["files_written"], first["actor_id"], first["customer_id"]) == (SHA, "api", ["src/auth.py"], "cursor-v1", "acme")
    assert KEY not in first["intent"] and "[REDACTED:AWS_ACCESS_KEY]" in first["intent"]
    assert table[ids["a2"]]["outcome"] is None and table[ids["a2"]]["outcome_count"] == 0
    orphan = table[ids["lost"]]
    assert not orphan["action_found"] and orphan["actor_id"] is None and (orphan["outcome"], orphan["outcome_count"]) == ("accepted", 1)
    section = manifest["provenance"]
    assert (section["agent_actions"], section["outcomes"], section["orphan_outcomes"], section["missing_actions"]) == (4, 4, 1, 1)
    assert section["by_outcome"] == {"accepted": 1, "rejected": 0, "superseded": 1, "none": 2}
    assert (section["left_out"], section["quarantined"], section["files"], section["files_parsed"]) == (2, 1, 2, 2)
    assert manifest["rows"]["provenance"] == 5
    assert ("provenance (seed 003): 4 agent actions, 4 outcomes (1 naming 1 actions the lake lacks), 2 events left out; "
            "rows labelled: sft 3, trajectories 1") in summary(manifest)


def test_a_damaged_line_is_quarantined_and_the_rest_of_its_file_kept(built):
    root, ids, manifest, build_dir = built
    damaged = [entry for entry in manifest["quarantine"]["records"] if entry["source"] == "provenance"]
    assert len(damaged) == 1 and damaged[0]["path"].endswith("w2.jsonl") and damaged[0]["offset"] == 0
    line = (root / damaged[0]["path"]).read_bytes().split(b"\n")[0]
    assert damaged[0]["length"] == len(line) + 1 and damaged[0]["reason"].startswith("not a provenance event record")
    assert ids["kept"] in {row["event_id"] for row in rows(build_dir, "provenance")}
    assert manifest["rows"]["sft"] == 5 and manifest["sessions"]["built"] == 1  # the other sources lost nothing


def test_the_table_is_listed_in_the_manifest_with_its_sha256(built):
    _, _, manifest, build_dir = built
    [entry] = [entry for entry in manifest["files"] if entry["path"].startswith("provenance/")]
    assert entry["sha256"] == hashlib.sha256((build_dir / entry["path"]).read_bytes()).hexdigest() and entry["rows"] == 5


def test_rows_naming_a_commit_are_labelled_with_its_actions_and_latest_outcome(built):
    _, ids, manifest, build_dir = built
    sft = {row["session_id"].rsplit(":", 1)[-1]: row["provenance"] for row in rows(build_dir, "sft")}
    labels = {key: (value["agent_actions"], value["outcome"], value["agent_action_ids"]) for key, value in sft.items()}
    assert labels["t-full"] == (1, "accepted", [ids["a1"]])  # a short SHA, its repo with host and owner
    assert labels["t-linked"] == (1, "superseded", [ids["a3"]])  # an outcome's linked_commit, in another case
    assert labels["t-other-repo"] == (0, None, []) and labels["t-none"] == (0, None, [])  # the action is in another repo; no commit
    assert labels["field-1"] == (1, None, [ids["a2"]])  # a field session's envelope metadata, no outcome yet
    [session] = rows(build_dir, "trajectories")
    assert session["provenance"]["commits"] == ["ABC1234F"] and session["provenance"]["agent_actions"] == 1
    assert manifest["provenance"]["labelled_rows"] == {"behavior": 0, "sft": 3, "trajectories": 1}
    stats = {row["item"]: row for row in lake_stats.provenance(build_dir)}
    assert (stats["accepted"]["actions"], stats["none"]["actions"], stats["missing action"]["outcomes"], stats["sft rows labelled"]["rows"]) == (1, 2, 1, 3)


def test_an_incremental_build_reuses_unchanged_files_and_relabels_when_provenance_arrives(built):
    root, ids, first, build_dir = built
    again = run_build(settings_for(root), progress=False)
    assert again["parent_build_id"] == first["build_id"] and again["provenance"]["files_reused"] == 2
    assert _sha(again, "provenance") == _sha(first, "provenance")
    provenance = ProvenanceStore(Lake.at(root), "w1")
    store(provenance, outcome(ids["a2"], "rejected"), now=DAY + 100)
    provenance.close()
    later = run_build(settings_for(root), progress=False)
    assert (later["provenance"]["files_parsed"], later["provenance"]["files_reused"], later["sessions"]["reused"]) == (1, 1, 1)
    [session] = rows(Lake.at(root).build_dir(later["build_id"]), "trajectories")
    assert (session["provenance"]["agent_actions"], session["provenance"]["outcome"]) == (1, "rejected")  # a reused row, relabelled

    raw = next((root / "raw" / "provenance").rglob("w1.jsonl"))  # rewritten in place, its size and mtime put back: parsed again
    before = raw.stat()
    raw.write_bytes(raw.read_bytes().replace(b'"intent":"refactor web"', b'"intent":"refactor WEB"'))
    os.utime(raw, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (raw.stat().st_size, raw.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    rewritten = run_build(settings_for(root), progress=False)
    assert (rewritten["provenance"]["files_parsed"], rewritten["provenance"]["files_reused"]) == (1, 1)
    table = {row["event_id"]: row for row in rows(Lake.at(root).build_dir(rewritten["build_id"]), "provenance")}
    assert table[ids["a2"]]["intent"] == "refactor WEB"


def _sha(manifest, table):
    return [entry["sha256"] for entry in manifest["files"] if entry["path"].startswith(f"{table}/")]


def test_short_shas_and_repositories_match_as_the_query_api_matches_them():
    table = pa.Table.from_pylist([
        {"event_id": "e1", "customer_id": "c", "action_found": True, "repo": "my-project", "commit": "ABC123def", "outcome": None, "outcomes": [],
         "outcome_count": 0},
        {"event_id": "e2", "customer_id": "c", "action_found": True, "repo": "other", "commit": "abc1", "outcome": "rejected", "outcome_count": 1,
         "outcomes": [{"event_id": "o1", "status": "rejected", "linked_commit": "release-7", "received_at": 5.0, "raw_id": "raw/p.jsonl:3"}]},
        {"event_id": "e3", "customer_id": "c", "action_found": False, "repo": None, "commit": None, "outcome": "accepted", "outcome_count": 1,
         "outcomes": [{"event_id": "o2", "status": "accepted", "linked_commit": "abc123", "received_at": 9.0, "raw_id": "raw/p.jsonl:4"}]},
    ], schema=PROVENANCE_ACTIONS)
    labeller = Labeller(table)
    names = lambda commit: sorted(labeller.ids[n] for n in labeller.actions_of(commit))  # noqa: E731
    assert names("abc1") == ["e1", "e2"] and names("ABC123DEE0") == ["e2"] and names("abc") == [] and names("abc123") == ["e1", "e2"]
    assert names("release-7") == ["e2"] and names("RELEASE-7") == []  # text that is no SHA names only itself
    assert labeller.labels(["abc1"], ["github.com/acme/my-project.git"]) == (1, None, ["e1"])  # a missing action labels nothing
    assert labeller.labels(["abc1"], []) == (2, "rejected", ["e1", "e2"])
    assert same_repo("my-project", "GitHub.com/acme/My-Project/") and not same_repo("project", "my-project")


def test_an_unreadable_provenance_file_is_quarantined_whole(tmp_path):
    relative = "raw/provenance/customer=acme/date=2026-11-30/gone.jsonl"
    (tmp_path / relative).parent.mkdir(parents=True)
    (tmp_path / relative).symlink_to(tmp_path / "on-a-volume-no-longer-mounted")
    result = parse_file(str(tmp_path), relative, str(tmp_path / "staged.parquet"), [], None, None)
    assert result["quarantined"] == [{"source": "provenance", "path": relative, "offset": 0, "length": 0, "reason": "unreadable: No such file or directory"}]
    assert fold([tmp_path / "staged.parquet"], [])[0].num_rows == 0
