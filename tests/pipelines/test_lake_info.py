"""`trajforge lake info`: a lake's raw sources, datasets, builds and syncs, read from its files and manifests."""

from __future__ import annotations

import json

import pytest

from sft_builds import rows, write_build
from test_lake_sync import RAW, make_lake

from pipelines.build.publish import publish_build
from pipelines.lake_info import lake_info
from pipelines.lake_sync import sync_lake
from trajforge.cli.main import main
from trajforge.lake import Lake


def test_info_counts_raw_sources_datasets_builds_and_syncs(tmp_path):
    lake = make_lake(tmp_path / "lake")
    (tmp_path / "lake/raw/datasets/marv/_meta.json").write_text(json.dumps(
        {"source": "marv", "version": "sample-2", "license": "NOASSERTION", "downloaded_at": "2026-12-07T00:00:00Z", "sha256": "c7" * 32,
         "num_records": 2}))
    (tmp_path / "lake/processed/datasets").mkdir(parents=True)
    (tmp_path / "lake/processed/datasets/manifest.json").write_text(json.dumps({"files": [
        {"path": "java/train.jsonl", "rows": 3}, {"path": "java/dev.jsonl", "rows": 0}, {"path": "python/test.jsonl", "rows": 1}]}))
    write_build(tmp_path / "lake", "20261207T000000Z-0001", rows(4))
    write_build(tmp_path / "lake", "20261207T010000Z-0002", rows(6))  # LATEST names it
    (tmp_path / "lake/curated/.20261207T020000Z-0003.partial").mkdir()  # a killed build: not listed
    sync_lake(lake, (tmp_path / "shared").as_uri(), progress=False)
    for build in ("20261207T000000Z-0001", "20261207T010000Z-0002", "20261207T000000Z-0001"):  # the first one again: listed once, last
        publish_build(lake, build, (tmp_path / "builds").as_uri())

    info = lake_info(lake)
    assert info["raw"]["trajectories"] == {"files": 1, "bytes": len(RAW["raw/trajectories/actor-1.jsonl"])}
    assert info["raw"]["datasets"]["files"] == 2  # MaRV.json and _meta.json; the .downloads partial left out
    assert info["datasets"]["ingested"]["marv"] == {"records": 2, "version": "sample-2", "license": "NOASSERTION", "sha256": "c7" * 6}
    assert info["datasets"]["processed"] == {"java": {"train": 3}, "python": {"test": 1}}
    assert [(build["build_id"], build["latest"], build["rows"]["sft"]) for build in info["builds"]] == [
        ("20261207T010000Z-0002", True, 6), ("20261207T000000Z-0001", False, 4)]
    assert info["syncs"] == [{"command": "publish", "uri": (tmp_path / "builds").as_uri(), "builds": 2, "newest": "20261207T000000Z-0001"},
                             {"command": "sync", "uri": (tmp_path / "shared").as_uri(), "files": 5}]  # the 4 raw files and _meta.json


def test_the_command_prints_it_and_names_a_missing_lake(tmp_path, capsys):
    make_lake(tmp_path / "lake")
    write_build(tmp_path / "lake", "20261207T010000Z-0002", rows(6))
    assert main(["lake", "info", "--lake", str(tmp_path / "lake")]) == 0
    out = capsys.readouterr().out
    assert "  trajectories         1 files" in out and "20261207T010000Z-0002" in out and "sft 6" in out and "<- latest" in out
    assert main(["lake", "info", "--lake", str(tmp_path / "lake"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["builds"][0]["latest"] is True
    assert main(["lake", "info", "--lake", str(tmp_path / "nowhere")]) == 2
    assert "nowhere does not exist: give the lake with --lake" in capsys.readouterr().err
    (tmp_path / "afile").write_text("x\n")
    assert main(["lake", "info", "--lake", str(tmp_path / "afile")]) == 2
    assert "afile is not a folder: give the lake with --lake" in capsys.readouterr().err  # it said "does not exist"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["lake", "info", "--lake", str(empty)]) == 0
    assert "builds: none yet (trajforge build)" in capsys.readouterr().out


def test_builds_n_lists_that_many_and_refuses_less_than_one(tmp_path, capsys):
    make_lake(tmp_path / "lake")
    for build in ("20261207T000000Z-0001", "20261207T010000Z-0002", "20261207T020000Z-0003"):
        write_build(tmp_path / "lake", build, rows(2))
    assert main(["lake", "info", "--lake", str(tmp_path / "lake"), "--builds", "2", "--json"]) == 0
    assert [build["build_id"] for build in json.loads(capsys.readouterr().out)["builds"]] == ["20261207T020000Z-0003", "20261207T010000Z-0002"]
    for count in ("0", "-1"):  # not every build, as the count was never reached
        with pytest.raises(SystemExit) as exit_:
            main(["lake", "info", "--lake", str(tmp_path / "lake"), "--builds", count])
        assert exit_.value.code == 2 and f"--builds: {count} is not at least 1" in capsys.readouterr().err


def test_a_build_whose_manifest_cannot_be_read_is_listed_as_damaged(tmp_path, capsys):
    make_lake(tmp_path / "lake")
    write_build(tmp_path / "lake", "20261207T000000Z-0001", rows(2))
    write_build(tmp_path / "lake", "20261207T010000Z-0002", rows(3))  # LATEST names it
    (tmp_path / "lake/curated/20261207T010000Z-0002/manifest.json").write_text("{torn")
    (tmp_path / "lake/curated/20261207T020000Z-0003").mkdir()  # no manifest at all: not a build, not listed
    assert main(["lake", "info", "--lake", str(tmp_path / "lake"), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["builds"]
    assert [(build["build_id"], build["latest"], build["damaged"]) for build in listed] == [
        ("20261207T010000Z-0002", True, "manifest.json cannot be read"), ("20261207T000000Z-0001", False, None)]
    assert main(["lake", "info", "--lake", str(tmp_path / "lake")]) == 0
    assert ("  20261207T010000Z-0002                        manifest.json cannot be read "
            f"(trajforge stats --lake {tmp_path / 'lake'} --build 20261207T010000Z-0002 says why) <- latest") in capsys.readouterr().out
