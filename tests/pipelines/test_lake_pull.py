"""`trajforge lake pull`: a raw lake that `lake sync` put at a URI, brought into another lake: every listed file checked
against its sha256, only what changed downloaded, a local file with bytes of its own never overwritten, a file a sync is
replacing left for later, a listed path outside raw/ refused. No Ray needed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_lake_sync import RAW, make_lake

from pipelines.lake_pull import pull_lake
from pipelines.lake_sync import LISTING, sync_lake
from trajforge.cli.main import main
from trajforge.errors import ConfigError, TrajforgeError
from trajforge.lake import Lake


def raw_files(root: Path) -> dict[str, bytes]:
    """The raw lake's files, without the temporary and partial ones (dot names), which a sync leaves behind."""
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in (root / "raw").rglob("*")
            if path.is_file() and not any(part.startswith(".") for part in path.relative_to(root).parts)}


@pytest.fixture
def synced(tmp_path):
    """A lake synced to a file:// URI: (the lake's root, the URI)."""
    make_lake(tmp_path / "origin")
    uri = (tmp_path / "shared").as_uri()
    sync_lake(Lake.at(tmp_path / "origin"), uri, progress=False)
    return tmp_path / "origin", uri


def test_a_synced_lake_is_pulled_whole_and_again_downloads_only_what_changed(tmp_path, synced):
    origin, uri = synced
    first = pull_lake(Lake.at(tmp_path / "here"), uri, progress=False)
    assert raw_files(tmp_path / "here") == RAW and (first["listed"], first["downloaded"]) == (4, 4)
    assert pull_lake(Lake.at(tmp_path / "here"), uri, progress=False)["unchanged"] == 4

    with open(origin / "raw/trajectories/actor-1.jsonl", "ab") as handle:
        handle.write(b'{"task_id": "t1", "step": 2}\n')
    (origin / "raw/trajectories/actor-2.jsonl").write_bytes(b'{"task_id": "t2", "step": 1}\n')
    sync_lake(Lake.at(origin), uri, progress=False)
    again = pull_lake(Lake.at(tmp_path / "here"), uri, progress=False)
    assert (again["downloaded"], again["unchanged"]) == (2, 3)
    assert raw_files(tmp_path / "here") == raw_files(origin)


def test_a_local_file_with_bytes_of_its_own_is_kept_and_one_already_here_is_not_downloaded(tmp_path, synced):
    _, uri = synced
    here = tmp_path / "here"
    (here / "raw/trajectories").mkdir(parents=True)
    (here / "raw/trajectories/actor-1.jsonl").write_bytes(b'{"task_id": "mine", "step": 1}\n')  # this lake's own step
    (here / "raw/tombstones").mkdir(parents=True)
    (here / "raw/tombstones/tombstones.jsonl").write_bytes(RAW["raw/tombstones/tombstones.jsonl"])
    result = pull_lake(Lake.at(here), uri, progress=False)
    assert (result["kept_local"], result["matched_local"], result["downloaded"]) == (1, 1, 2)
    assert (here / "raw/trajectories/actor-1.jsonl").read_bytes() == b'{"task_id": "mine", "step": 1}\n'
    assert not [path for path in here.rglob("*") if ".pull-" in path.name]


def test_a_local_prefix_of_the_synced_file_is_brought_up_to_it(tmp_path, synced):
    _, uri = synced
    here = tmp_path / "here"
    whole = RAW["raw/envelopes/date=2026-12-07/seg-000001.seg"]
    (here / "raw/envelopes/date=2026-12-07").mkdir(parents=True)
    (here / "raw/envelopes/date=2026-12-07/seg-000001.seg").write_bytes(whole[:100])  # pulled while it was growing
    assert pull_lake(Lake.at(here), uri, progress=False)["downloaded"] == 4
    assert (here / "raw/envelopes/date=2026-12-07/seg-000001.seg").read_bytes() == whole


def test_a_file_a_sync_is_replacing_is_left_for_the_next_pull(tmp_path, synced):
    _, uri = synced
    (tmp_path / "shared/raw/trajectories/actor-1.jsonl").write_bytes(b"newer bytes, listing not yet rewritten\n")
    result = pull_lake(Lake.at(tmp_path / "here"), uri, progress=False)
    assert (result["changed_remote"], result["downloaded"]) == (1, 3)
    assert not (tmp_path / "here/raw/trajectories/actor-1.jsonl").exists()


def test_a_listed_path_outside_the_raw_lake_is_refused(tmp_path, synced):
    _, uri = synced
    listing = json.loads((tmp_path / "shared" / LISTING).read_text())
    listing["files"]["../escaped.txt"] = {"bytes": 3, "sha256": "0" * 64}
    listing["files"]["registry/ingest.db"] = {"bytes": 3, "sha256": "0" * 64}
    (tmp_path / "shared" / LISTING).write_text(json.dumps(listing))
    result = pull_lake(Lake.at(tmp_path / "here"), uri, progress=False)
    assert (result["refused"], result["downloaded"]) == (2, 4)
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "here/registry").exists()


def test_only_and_a_uri_nothing_was_synced_to(tmp_path, synced):
    _, uri = synced
    result = pull_lake(Lake.at(tmp_path / "here"), uri, only=["raw/trajectories"], progress=False)
    assert list(raw_files(tmp_path / "here")) == ["raw/trajectories/actor-1.jsonl"] and result["listed"] == 1
    with pytest.raises(TrajforgeError, match="SYNC.json does not exist: nothing was synced to .*run `trajforge lake sync"):
        pull_lake(Lake.at(tmp_path / "here"), (tmp_path / "empty").as_uri(), progress=False)


@pytest.mark.parametrize("folder", ["curated", "registry", "/raw/trajectories", "raw/../curated", "raw/.downloads"])
def test_only_outside_the_raw_lake_is_refused_as_sync_refuses_it(tmp_path, synced, folder):
    _, uri = synced
    with pytest.raises(ConfigError, match=f"--only {folder}: not a folder of the raw lake"):  # it pulled nothing, exit 0
        pull_lake(Lake.at(tmp_path / "here"), uri, only=[folder], progress=False)
    assert not (tmp_path / "here").exists()


def test_the_command_pulls_from_s3(tmp_path, s3_server, capsys):
    make_lake(tmp_path / "origin")
    bucket = s3_server.bucket("lake-pull")
    sync_lake(Lake.at(tmp_path / "origin"), s3_server.uri(bucket, "lake"), progress=False)
    assert main(["lake", "pull", s3_server.uri(bucket, "lake"), "--lake", str(tmp_path / "here"), "--no-progress"]) == 0
    assert f"pulled 4 raw lake files from s3://{bucket}/lake: 4 downloaded, 0 already here" in capsys.readouterr().out
    assert raw_files(tmp_path / "here") == RAW


def test_a_lake_that_is_a_file_is_a_one_line_error(tmp_path, synced, capsys):
    from trajforge.cli.main import main

    _, uri = synced
    (tmp_path / "a-file").write_text("not a lake")
    assert main(["lake", "pull", uri, "--lake", str(tmp_path / "a-file"), "--no-progress"]) == 2  # it was a NotADirectoryError traceback
    assert f"--lake {tmp_path / 'a-file'}: cannot make or use this folder" in capsys.readouterr().err
    assert (tmp_path / "a-file").read_text() == "not a lake"


@pytest.mark.parametrize("body", ["not json", "[]", '{"files": []}', '{"files": {"raw/trajectories/actor-1.jsonl": {"bytes": 29}}}',
                                  '{"files": {"raw/trajectories/actor-1.jsonl": "x"}}'])
def test_a_listing_that_is_not_one_is_refused_and_a_sync_writes_it_again(tmp_path, synced, body):
    origin, uri = synced
    (tmp_path / "shared" / LISTING).write_text(body)
    with pytest.raises(TrajforgeError, match="SYNC.json is not a sync listing .*run `trajforge lake sync"):
        pull_lake(Lake.at(tmp_path / "here"), uri, progress=False)  # it pulled nothing (exit 0), or was a KeyError/TypeError
    sync_lake(Lake.at(origin), uri, progress=False)  # the sync compares nothing with it: sends again, lists every file
    assert pull_lake(Lake.at(tmp_path / "here"), uri, progress=False)["downloaded"] == len(RAW)
    assert raw_files(tmp_path / "here") == RAW
