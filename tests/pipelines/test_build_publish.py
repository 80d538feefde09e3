"""Publishing a build, and what a killed build leaves: no reader or later build ever takes a half-written build
for a complete one, and a build running beside another keeps its work folder. No Ray needed."""

from __future__ import annotations

import fcntl
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.build.job import _earlier_builds, claim_build_id, running_build
from pipelines.build.manifest import publish
from trajforge import atomic
from trajforge.errors import TrajforgeError
from trajforge.lake import Lake


def fill(work: Path) -> list[str]:
    """A work folder's files as a build leaves them before publishing (tables and staging); their paths in it."""
    for relative in ("sft/part-00000.parquet", "trajectories/part-00000.parquet", "_stage/sft/b-b000000.parquet"):
        (work / relative).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"x": [1, 2, 3]}), work / relative)
    return ["sft/part-00000.parquet", "trajectories/part-00000.parquet", "_stage/sft/b-b000000.parquet"]


def test_every_file_of_a_build_is_fsynced_before_it_is_published(tmp_path, monkeypatch):
    lake = Lake.at(tmp_path / "lake")
    build_id, work = claim_build_id(lake)
    files = fill(work)
    synced: list[Path] = []
    monkeypatch.setattr(atomic, "fsync_file", lambda path: synced.append(Path(path)))
    final = publish(lake, work, build_id, {"build_id": build_id, "files": []})
    assert lake.latest_build_id() == build_id and final == lake.build_dir(build_id)
    assert {work / relative for relative in files} | {work / "manifest.json"} <= set(synced)  # synced under the work name
    assert any(path.parent == lake.curated and path.name.startswith(".LATEST") for path in synced)


def test_a_build_killed_before_it_is_renamed_is_never_latest_nor_a_parent_nor_resolvable(tmp_path, monkeypatch):
    lake = Lake.at(tmp_path / "lake")
    first, work = claim_build_id(lake)
    fill(work)
    publish(lake, work, first, {"build_id": first, "files": []})
    second, work = claim_build_id(lake)
    fill(work)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed between the manifest and the rename")

    monkeypatch.setattr("pipelines.build.manifest.publish_dir", killed)
    with pytest.raises(KeyboardInterrupt):
        publish(lake, work, second, {"build_id": second, "files": []})
    monkeypatch.undo()
    assert (work / "manifest.json").is_file()  # the manifest is there, in the folder that was never renamed
    assert lake.latest_build_id() == first and lake.resolve_build("latest") == lake.build_dir(first)
    assert _earlier_builds(lake) == [lake.build_dir(first)]  # what an incremental build may take as its parent
    with pytest.raises(TrajforgeError, match="has not finished"):
        lake.resolve_build(str(work))


def test_the_next_build_removes_a_killed_builds_folder_but_not_a_running_ones(tmp_path):
    lake = Lake.at(tmp_path / "lake")
    _, running = claim_build_id(lake)
    with open(lake.curated / ".builds.lock", "a+b") as other:  # another build, running: it holds the lock shared
        fcntl.flock(other, fcntl.LOCK_SH)
        with running_build(lake):
            assert running.is_dir()
    with running_build(lake):  # that build was killed: nobody holds the lock any more
        assert not running.exists()
        _, mine = claim_build_id(lake)
        with open(lake.curated / ".builds.lock", "a+b") as third:  # a build starting now cannot sweep mine away
            with pytest.raises(BlockingIOError):
                fcntl.flock(third, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert mine.is_dir()


def test_the_manifest_is_written_whole(tmp_path):
    lake = Lake.at(tmp_path / "lake")
    build_id, work = claim_build_id(lake)
    fill(work)
    manifest = {"build_id": build_id, "files": [{"path": "sft/part-00000.parquet", "rows": 3}]}
    final = publish(lake, work, build_id, manifest)
    assert json.loads((final / "manifest.json").read_text()) == manifest
    assert sorted(path.name for path in lake.curated.iterdir()) == [build_id, "LATEST"]


def test_a_killed_builds_id_and_an_interrupted_build_say_what_they_left(tmp_path, monkeypatch, capsys):
    from trajforge.cli.main import run

    lake = Lake.at(tmp_path / "lake")
    (lake.curated / ".b-killed.partial").mkdir(parents=True)
    with pytest.raises(TrajforgeError, match=r"build b-killed has not finished \(it was killed, or still runs\)"):
        lake.resolve_build("b-killed")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("pipelines.build.run_build", interrupted)
    monkeypatch.setattr("trajforge.cluster.warn_if_cpus_taken", lambda *args: None)
    assert run(["build", "--lake", str(lake.root), "--no-embed", "--no-progress"]) == 130
    assert "trajforge build: interrupted, nothing published: there is no finished build yet; run the same command again" \
        in capsys.readouterr().err
