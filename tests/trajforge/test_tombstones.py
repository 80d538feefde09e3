"""Tombstones: validated, durable appends; a torn last line is set aside, a corrupt earlier one stops the reader."""

from __future__ import annotations

import json

import pytest

from trajforge.client import contributor_id_for
from trajforge.errors import ConfigError, LakeCorruption
from trajforge.lake import Lake
from trajforge.tombstones import builds_holding, digest, forget, forgotten


def test_forget_appends_a_record_and_the_reader_sees_it(tmp_path):
    lake = Lake.at(tmp_path)
    alice, bob = contributor_id_for("alice"), contributor_id_for("bob")
    assert forgotten(lake) == set()
    record = forget(lake, alice.upper(), reason="ticket 7")
    forget(lake, bob)
    assert record["contributor_id"] == alice and record["reason"] == "ticket 7"
    assert forgotten(lake) == {alice, bob}
    assert [json.loads(line)["contributor_id"] for line in lake.tombstones.read_text().splitlines()] == [alice, bob]
    assert digest({alice, bob}) == digest({bob, alice}) != digest({alice})


@pytest.mark.parametrize("bad", ["alice", "", "g" * 32, 12345])
def test_a_malformed_contributor_id_is_refused(tmp_path, bad):
    with pytest.raises(ConfigError, match="32 hex"):
        forget(Lake.at(tmp_path), bad)
    assert not Lake.at(tmp_path).tombstones.exists()


def test_a_torn_last_line_is_ignored_then_moved_aside_by_the_next_forget(tmp_path):
    lake = Lake.at(tmp_path)
    alice, bob = contributor_id_for("alice"), contributor_id_for("bob")
    forget(lake, alice)
    with lake.tombstones.open("ab") as handle:  # a process killed mid-append
        handle.write(b'{"contributor_id": "' + bob[:10].encode())
    assert forgotten(lake) == {alice}
    forget(lake, bob)
    assert forgotten(lake) == {alice, bob}
    assert [path.read_bytes() for path in lake.quarantine.glob("tombstones-torn-*")] == [b'{"contributor_id": "' + bob[:10].encode()]


def test_a_corrupt_line_before_the_end_stops_the_reader(tmp_path):
    lake = Lake.at(tmp_path)
    forget(lake, contributor_id_for("alice"))
    lake.tombstones.write_bytes(b"not json\n" + lake.tombstones.read_bytes())
    with pytest.raises(LakeCorruption, match="tombstones.jsonl:1"):
        forgotten(lake)


def test_the_command_writes_the_tombstone(tmp_path, capsys):
    from trajforge.cli.main import main

    assert main(["forget", contributor_id_for("carol"), "--lake", str(tmp_path), "--reason", "asked by mail"]) == 0
    assert "next `trajforge build` leaves this contributor out" in capsys.readouterr().out
    assert forgotten(Lake.at(tmp_path)) == {contributor_id_for("carol")}
    assert main(["forget", "carol", "--lake", str(tmp_path)]) == 2


def test_the_first_tombstone_survives_a_power_loss_its_name_and_new_folders_fsynced(tmp_path, monkeypatch):
    import trajforge.tombstones as tombstones

    synced = []
    monkeypatch.setattr(tombstones, "fsync_dir", synced.append)
    lake = Lake.at(tmp_path / "lake")
    forget(lake, contributor_id_for("alice"))
    assert synced == [lake.tombstones.parent, lake.raw, lake.root]  # the new file's folder, then each new folder's parent
    synced.clear()
    forget(lake, contributor_id_for("bob"))
    assert synced == []  # an append to a file that is already there needs only the file's own fsync


def test_the_command_refuses_a_lake_that_does_not_exist(tmp_path, capsys):
    from trajforge.cli.main import main

    missing = tmp_path / "lkae"  # a mistyped --lake: a tombstone there would never reach a build
    assert main(["forget", contributor_id_for("carol"), "--lake", str(missing)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not missing.exists()
    (tmp_path / "a-file").write_text("not a lake")
    assert main(["forget", contributor_id_for("carol"), "--lake", str(tmp_path / "a-file")]) == 2
    assert f"--lake: {tmp_path / 'a-file'} is not a folder" in capsys.readouterr().err  # it said the file did not exist


def _table(folder, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), folder / "part-00000.parquet")


def test_builds_holding_finds_a_contributor_in_any_table_not_only_trajectories(tmp_path):
    lake = Lake.at(tmp_path)
    grace, other = contributor_id_for("grace"), contributor_id_for("other")
    curated = tmp_path / "curated"
    _table(curated / "b1-session" / "trajectories", [{"session_id": "s1", "contributor_id": grace.upper()}])
    _table(curated / "b2-telemetry" / "trajectories", [{"session_id": "s2", "contributor_id": other}])  # only her telemetry turns
    _table(curated / "b2-telemetry" / "sft", [{"example_id": "e1", "provenance": {"source": "telemetry", "contributor_id": grace}}])
    _table(curated / "b3-behavior" / "behavior", [{"row_id": "r1", "provenance": {"source": "telemetry", "contributor_id": grace}}])
    _table(curated / "b4-action" / "provenance", [{"event_id": "a1", "actor_id": grace, "customer_id": "acme"}])
    _table(curated / "b5-none" / "sft", [{"example_id": "e2", "provenance": {"source": "dataset", "contributor_id": None}}])
    (curated / "b6-empty").mkdir()
    assert builds_holding(lake, grace) == ["b1-session", "b2-telemetry", "b3-behavior", "b4-action"]
    assert builds_holding(lake, other) == ["b2-telemetry"]


def test_the_command_names_the_published_copies_of_the_builds_holding_the_contributor(tmp_path, capsys):
    from pipelines.build.publish import publish_build
    from trajforge.cli.main import main
    from trajforge.lake import sha256_of

    grace = contributor_id_for("grace")
    build = tmp_path / "lake" / "curated" / "20261201T000000Z-0001"
    _table(build / "trajectories", [{"session_id": "s1", "contributor_id": grace}])
    part = build / "trajectories" / "part-00000.parquet"
    (build / "manifest.json").write_text(json.dumps({"build_id": build.name, "files": [
        {"path": "trajectories/part-00000.parquet", "rows": 1, "bytes": part.stat().st_size, "sha256": sha256_of(part)}]}))
    shared = (tmp_path / "shared").as_uri()
    publish_build(Lake.at(tmp_path / "lake"), build.name, shared)
    assert main(["forget", grace, "--lake", str(tmp_path / "lake")]) == 0
    out = capsys.readouterr().out
    assert f"remove them once a new build is out: {build}" in out
    assert f"and their copies that `trajforge lake publish` put on storage: {shared}/{build.name}" in out  # learners train on those
