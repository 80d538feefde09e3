"""The learner on builds published to object storage (moto's S3 server) or a file:// URI: the same verified Arrow cache
as the local build's; an interrupted publish is never read, a damaged object is named, storage errors name the setting."""

from __future__ import annotations

import pyarrow as pa
import pytest
from published_builds import finished_build

from learner.sources import open_split, prepare_source
from learner.train import main
from pipelines.build.publish import publish_build
from trajforge import lake_fs
from trajforge.errors import LakeCorruption, TrajforgeError
from trajforge.lake import Lake


def cached(source) -> dict[str, pa.Table]:
    return {split: open_split(source, split) for split in ("train", "dev")}


def test_a_published_build_trains_from_the_same_cache_as_the_local_one(tmp_path, s3_server, monkeypatch):
    folder = finished_build(tmp_path / "lake")
    lake = Lake.at(tmp_path / "lake")
    uri = s3_server.uri(s3_server.bucket("learner-reads"), "builds")
    publish_build(lake, "latest", uri)
    local = prepare_source(lake, "latest", 1.0, tmp_path / "local-cache")
    head, _, query = uri.partition("?")
    remote = prepare_source(Lake.at(tmp_path / "elsewhere"), f"{head}/latest?{query}", 1.0, tmp_path / "remote-cache")
    assert (remote.build_id, remote.train_rows, remote.dev_rows) == (local.build_id, local.train_rows, local.dev_rows) == (folder.name, 9, 3)
    assert remote.build_dir == f"s3://learner-reads/builds/{folder.name}"
    assert all(cached(remote)[split].equals(cached(local)[split]) for split in ("train", "dev"))
    assert [path.name for path in (tmp_path / "remote-cache").iterdir()] == [f"{folder.name}-{remote.cache_dir.rsplit('-', 1)[1]}"]
    assert sorted(path.name for path in (tmp_path / "remote-cache").iterdir() for path in path.iterdir()) == ["dev.arrow", "rows.json", "train.arrow"]
    monkeypatch.setattr("learner.published.download", lambda *args: pytest.fail("downloaded again"))
    again = prepare_source(Lake.at(tmp_path / "elsewhere"), f"{head}/{folder.name}?{query}", 2.0, tmp_path / "remote-cache")
    assert again.cache_dir == remote.cache_dir and again.weight == 2.0  # by id, from the cache


def test_an_interrupted_publish_is_never_read_and_publishing_again_completes_it(tmp_path, s3_server, monkeypatch):
    folder = finished_build(tmp_path / "lake")
    lake = Lake.at(tmp_path / "lake")
    uri = s3_server.uri(s3_server.bucket("interrupted"), "builds")
    head, _, query = uri.partition("?")
    real, calls = lake_fs.upload, []

    def killed_after_two(*args):
        calls.append(args[-1])
        if len(calls) > 2:
            raise KeyboardInterrupt("killed while publishing")
        return real(*args)

    monkeypatch.setattr(lake_fs, "upload", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        publish_build(lake, "latest", uri)
    monkeypatch.undo()
    with pytest.raises(TrajforgeError, match=rf"s3://interrupted/builds/{folder.name} has no manifest.json: build {folder.name} was not "
                                             rf"published there, or its publish was interrupted .* run `trajforge lake publish {folder.name} "
                                             r"s3://interrupted/builds` again"):
        prepare_source(lake, f"{head}/{folder.name}?{query}", 1.0, tmp_path / "cache")
    with pytest.raises(TrajforgeError, match=r"s3://interrupted/builds/LATEST does not exist: no build was published"):
        prepare_source(lake, f"{head}/latest?{query}", 1.0, tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
    result = publish_build(lake, "latest", uri)
    assert (result["uploaded"], result["skipped"], result["manifest_written"]) == (1, 2, True)
    assert prepare_source(lake, f"{head}/latest?{query}", 1.0, tmp_path / "cache").train_rows == 9


def test_a_damaged_object_is_refused_by_name_and_publishing_again_mends_it(tmp_path, s3_server):
    folder = finished_build(tmp_path / "lake")
    lake = Lake.at(tmp_path / "lake")
    bucket = s3_server.bucket("damaged")
    uri = s3_server.uri(bucket, "builds")
    head, _, query = uri.partition("?")
    publish_build(lake, "latest", uri)
    filesystem, key = s3_server.filesystem(), f"{bucket}/builds/{folder.name}/sft/part-00001.parquet"
    data = bytearray(filesystem.open_input_stream(key).read())
    data[len(data) // 2] ^= 0xFF
    with filesystem.open_output_stream(key) as stream:
        stream.write(bytes(data))
    with pytest.raises(LakeCorruption, match=rf"s3://damaged/builds/{folder.name}/sft/part-00001\.parquet does not match the sha256 in "
                                             rf".*manifest\.json: the published file is damaged; publish it there again"):
        prepare_source(Lake.at(tmp_path / "elsewhere"), f"{head}/latest?{query}", 1.0, tmp_path / "cache")
    assert [path.name for path in (tmp_path / "cache").iterdir()] == []  # nothing cached, no download left behind
    assert publish_build(lake, "latest", uri)["uploaded"] == 1
    assert prepare_source(Lake.at(tmp_path / "elsewhere"), f"{head}/latest?{query}", 1.0, tmp_path / "cache").train_rows == 9


def test_a_file_uri_build_is_read_like_an_s3_one(tmp_path):
    folder = finished_build(tmp_path / "lake")
    publish_build(Lake.at(tmp_path / "lake"), "latest", f"file://{tmp_path / 'shared'}")
    source = prepare_source(Lake.at(tmp_path / "elsewhere"), f"file://{tmp_path / 'shared'}/latest", 1.0, tmp_path / "cache")
    assert (source.build_id, source.train_rows, source.build_dir) == (folder.name, 9, f"file://{tmp_path / 'shared'}/{folder.name}")


def test_an_unreachable_endpoint_names_the_setting(tmp_path, monkeypatch):
    from helpers import free_port

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    with pytest.raises(TrajforgeError, match=r"s3://bucket/builds/LATEST: looking it up failed \(.*\); cannot reach the storage endpoint: "
                                             r"check AWS_ENDPOINT_URL \(or AWS_ENDPOINT_URL_S3\), or endpoint_override"):
        prepare_source(Lake.at(tmp_path / "lake"), "s3://bucket/builds/latest", 1.0, tmp_path / "cache")


def test_refused_credentials_name_the_settings():
    error = lake_fs.storage_error(OSError("When reading information for key 'b/m' in bucket 'x': AWS Error ACCESS_DENIED during "
                                          "HeadObject operation: No response body."), "s3://x/b/m", "looking it up")
    assert "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN), or AWS_PROFILE" in str(error)


def test_the_command_refuses_an_unpublished_build_before_starting_ray(tmp_path, capsys):
    uri = f"file://{tmp_path / 'shared'}/20260101T000000Z-0001"
    code = main(["--build", uri, "--set", f"learner.output_dir={tmp_path / 'runs'}"])
    assert code == 2
    assert f"{uri} has no manifest.json" in capsys.readouterr().err


def test_a_worker_on_a_node_without_the_drivers_cache_makes_it_again_from_the_build_the_driver_resolved(tmp_path):
    import shutil

    from learner.sources import ensure_on_this_node

    finished_build(tmp_path / "lake")
    uri = f"file://{tmp_path / 'shared'}/latest"
    publish_build(Lake.at(tmp_path / "lake"), "latest", f"file://{tmp_path / 'shared'}")
    source = prepare_source(Lake.at(tmp_path / "elsewhere"), uri, 1.0, tmp_path / "cache")
    rows = cached(source)
    finished_build(tmp_path / "lake", "20260102T000000Z-0002")
    publish_build(Lake.at(tmp_path / "lake"), "latest", f"file://{tmp_path / 'shared'}")  # LATEST moves on meanwhile
    shutil.rmtree(tmp_path / "cache")  # the learner node sees no such folder
    assert ensure_on_this_node(source, uri) == source
    assert all(cached(source)[split].equals(rows[split]) for split in rows)
