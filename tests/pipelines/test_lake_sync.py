"""`trajforge lake sync`: the raw lake to object storage (moto's S3 server) or a file:// URI, incrementally: only what
changed goes, an interrupted sync goes on where it stopped, a lost record is made good from SYNC.json, temporary files
and the indexes stay behind, and two syncs never run at once. No Ray needed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pipelines.lake_sync import LISTING, record_path, sync_lake
from trajforge import lake_fs
from trajforge.cli.main import main
from trajforge.errors import ConfigError, TrajforgeError
from trajforge.lake import Lake, sha256_of

RAW = {
    "raw/trajectories/actor-1.jsonl": b'{"task_id": "t1", "step": 1}\n',
    "raw/envelopes/date=2026-12-07/seg-000001.seg": b"\x00frames\x01" * 50,
    "raw/tombstones/tombstones.jsonl": b'{"contributor_id": "abc"}\n',
    "raw/datasets/marv/source/MaRV.json": b"{}",
}
LEFT_BEHIND = {
    "raw/datasets/.downloads/marv-0123.partial": b"half a download",
    "raw/events/.seg-000002.seg.tmp": b"being written",
    "registry/ingest.db": b"SQLite format 3\x00",
}


def make_lake(root: Path) -> Lake:
    for relative, data in {**RAW, **LEFT_BEHIND}.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(data)
    return Lake.at(root)


def stored(destination: Path) -> dict[str, bytes]:
    return {path.relative_to(destination).as_posix(): path.read_bytes() for path in destination.rglob("*") if path.is_file()}


def test_every_raw_file_goes_once_with_a_listing_and_again_sends_only_what_changed(tmp_path):
    lake = make_lake(tmp_path / "lake")
    destination = tmp_path / "shared"
    first = sync_lake(lake, destination.as_uri(), progress=False)
    files = stored(destination)
    assert {path: data for path, data in files.items() if path != LISTING} == RAW  # no partial, temporary file or index
    listing = json.loads(files[LISTING])["files"]
    assert listing == {path: {"bytes": len(data), "sha256": sha256_of(tmp_path / "lake" / path)} for path, data in RAW.items()}
    assert (first["files"], first["sent"], first["unchanged"]) == (4, 4, 0)

    assert sync_lake(lake, destination.as_uri(), progress=False)["sent"] == 0
    with open(tmp_path / "lake" / "raw/trajectories/actor-1.jsonl", "ab") as handle:  # the store appends a step
        handle.write(b'{"task_id": "t1", "step": 2}\n')
    (tmp_path / "lake" / "raw/trajectories/actor-2.jsonl").write_bytes(b'{"task_id": "t2", "step": 1}\n')
    again = sync_lake(lake, destination.as_uri(), progress=False)
    assert (again["sent"], again["unchanged"], again["files"]) == (2, 3, 5)
    assert stored(destination)["raw/trajectories/actor-1.jsonl"].count(b"\n") == 2
    assert json.loads(stored(destination)[LISTING])["files"]["raw/trajectories/actor-2.jsonl"]["bytes"] == 29


def test_an_interrupted_sync_goes_on_where_it_stopped(tmp_path, monkeypatch):
    lake = make_lake(tmp_path / "lake")
    destination = (tmp_path / "shared").as_uri()
    real, sent = lake_fs.upload, []

    def fails_on_the_third(source, remote, relative):
        if len(sent) == 2:
            raise TrajforgeError("the storage went away")
        sent.append(relative)
        return real(source, remote, relative)

    monkeypatch.setattr(lake_fs, "upload", fails_on_the_third)
    with pytest.raises(TrajforgeError, match="the storage went away"):
        sync_lake(lake, destination, progress=False)
    monkeypatch.setattr(lake_fs, "upload", real)
    resumed = sync_lake(lake, destination, progress=False)
    assert (resumed["unchanged"], resumed["sent"]) == (2, 2)
    assert {path: data for path, data in stored(tmp_path / "shared").items() if path != LISTING} == RAW


def test_a_lake_without_its_record_sends_nothing_the_listing_already_has(tmp_path):
    lake = make_lake(tmp_path / "lake")
    destination = (tmp_path / "shared").as_uri()
    sync_lake(lake, destination, progress=False)
    record_path(lake, destination).unlink()  # another machine, or a lost state folder
    (tmp_path / "lake" / "raw/tombstones/tombstones.jsonl").write_bytes(b'{"contributor_id": "abc"}\n{"contributor_id": "def"}\n')
    again = sync_lake(lake, destination, progress=False)
    assert (again["matched_remote"], again["sent"]) == (3, 1)
    assert stored(tmp_path / "shared")["raw/tombstones/tombstones.jsonl"].count(b"\n") == 2


def test_a_destination_emptied_since_the_last_sync_gets_every_file_again(tmp_path):
    import shutil

    lake = make_lake(tmp_path / "lake")
    destination = tmp_path / "shared"
    sync_lake(lake, destination.as_uri(), progress=False)
    shutil.rmtree(destination)  # the bucket emptied or replaced; this lake's record still says everything went
    again = sync_lake(lake, destination.as_uri(), progress=False)
    assert (again["sent"], again["unchanged"]) == (4, 0)
    files = stored(destination)
    assert {path: data for path, data in files.items() if path != LISTING} == RAW  # what SYNC.json lists is there
    assert set(json.loads(files[LISTING])["files"]) == set(RAW)


@pytest.mark.parametrize("inside", ["raw/mirror", "raw", ""])
def test_a_uri_inside_the_raw_lake_or_the_lake_itself_is_refused(tmp_path, inside):
    lake = make_lake(tmp_path / "lake")
    with pytest.raises(ConfigError, match="is the lake .* or inside its raw/: sync it to a place outside the raw lake"):
        sync_lake(lake, (tmp_path / "lake" / inside).as_uri(), progress=False)  # it copied raw/ into raw/mirror/raw/, again each time
    assert not (tmp_path / "lake" / "raw/mirror").exists() and not (tmp_path / "lake" / LISTING).exists()


def test_a_uri_elsewhere_in_the_lakes_folder_is_a_place_like_any_other(tmp_path):
    """`trajforge demo` syncs to `lake/shared/lake`, standing for a bucket: nothing there is synced again."""
    lake = make_lake(tmp_path / "lake")
    first = sync_lake(lake, (tmp_path / "lake" / "shared" / "lake").as_uri(), progress=False)
    again = sync_lake(lake, (tmp_path / "lake" / "shared" / "lake").as_uri(), progress=False)
    assert (first["sent"], again["sent"], again["unchanged"]) == (len(RAW), 0, len(RAW))


def test_only_takes_folders_of_the_raw_lake(tmp_path):
    lake = make_lake(tmp_path / "lake")
    result = sync_lake(lake, (tmp_path / "shared").as_uri(), only=["raw/trajectories"], progress=False)
    assert result["sent"] == 1 and sorted(stored(tmp_path / "shared")) == [LISTING, "raw/trajectories/actor-1.jsonl"]
    with pytest.raises(ConfigError, match="--only registry: not under .*raw"):
        sync_lake(lake, (tmp_path / "shared").as_uri(), only=["registry"], progress=False)
    with pytest.raises(ConfigError, match="--only raw/nothing: .* does not exist"):
        sync_lake(lake, (tmp_path / "shared").as_uri(), only=["raw/nothing"], progress=False)


def test_a_second_sync_of_the_same_lake_to_the_same_uri_is_told_to_wait(tmp_path, monkeypatch):
    import fcntl

    lake = make_lake(tmp_path / "lake")
    destination = (tmp_path / "shared").as_uri()
    lock = record_path(lake, destination).with_suffix(".lock")
    lock.parent.mkdir(parents=True)
    holder = os.open(lock, os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        with pytest.raises(TrajforgeError, match="another `trajforge lake sync` of this lake and this URI is running"):
            sync_lake(lake, destination, progress=False)
    finally:
        os.close(holder)
    assert not (tmp_path / "shared").exists()


def test_a_file_growing_while_it_is_sent_goes_again_next_time(tmp_path, monkeypatch):
    lake = make_lake(tmp_path / "lake")
    destination = (tmp_path / "shared").as_uri()
    real = lake_fs.upload
    growing = tmp_path / "lake" / "raw/trajectories/actor-1.jsonl"

    def append_after(source, remote, relative):
        sent = real(source, remote, relative)
        if relative.endswith("actor-1.jsonl") and growing.stat().st_size == len(RAW["raw/trajectories/actor-1.jsonl"]):
            with open(growing, "ab") as handle:  # the open file's writer appends during the upload
                handle.write(b'{"task_id": "t1", "step": 2}\n')
        return sent

    monkeypatch.setattr(lake_fs, "upload", append_after)
    sync_lake(lake, destination, progress=False)
    monkeypatch.setattr(lake_fs, "upload", real)
    again = sync_lake(lake, destination, progress=False)
    assert again["sent"] == 1 and stored(tmp_path / "shared")["raw/trajectories/actor-1.jsonl"] == growing.read_bytes()


def test_the_command_syncs_to_s3_and_says_what_it_sent(tmp_path, s3_server, capsys):
    make_lake(tmp_path / "lake")
    bucket = s3_server.bucket("lake-sync")
    assert main(["lake", "sync", s3_server.uri(bucket, "lake"), "--lake", str(tmp_path / "lake"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"synced 4 raw lake files to s3://{bucket}/lake: 4 sent" in out and "testing" not in out
    from pyarrow import fs as pafs

    found = s3_server.filesystem().get_file_info(pafs.FileSelector(bucket, recursive=True))
    assert sorted(info.path for info in found if info.type == pafs.FileType.File) == sorted(
        [f"{bucket}/lake/{path}" for path in RAW] + [f"{bucket}/lake/{LISTING}"])
    assert main(["lake", "sync", s3_server.uri(bucket, "lake"), "--lake", str(tmp_path / "lake"), "--no-progress", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["unchanged"] == 4
    assert main(["lake", "sync", s3_server.uri(bucket, "lake"), "--lake", str(tmp_path / "nolake")]) == 2
    assert "raw does not exist: give the lake with --lake" in capsys.readouterr().err

