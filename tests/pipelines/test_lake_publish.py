"""Publishing a finished build to object storage (moto's S3 server) or a file:// URI: every file checked after its
upload, the manifest last, LATEST after it; idempotent; refused where it would mix two builds. No Ray needed."""

from __future__ import annotations

import json

import pytest
from published_builds import finished_build

from pipelines.build.publish import publish_build
from trajforge import lake_fs
from trajforge.cli.main import main
from trajforge.errors import ConfigError, TrajforgeError
from trajforge.lake import Lake


def objects(server, bucket: str) -> dict[str, bytes]:
    from pyarrow import fs as pafs

    filesystem = server.filesystem()
    found = filesystem.get_file_info(pafs.FileSelector(bucket, recursive=True))
    return {info.path.split("/", 1)[1]: filesystem.open_input_stream(info.path).read() for info in found if info.type == pafs.FileType.File}


def test_a_build_is_published_whole_with_its_manifest_and_latest_and_again_sends_nothing(tmp_path, s3_server):
    folder = finished_build(tmp_path / "lake")
    bucket = s3_server.bucket("publish-whole")
    first = publish_build(Lake.at(tmp_path / "lake"), "latest", s3_server.uri(bucket, "builds"))
    stored = objects(s3_server, bucket)
    listed = [entry["path"] for key in ("files", "staging") for entry in json.loads((folder / "manifest.json").read_text())[key]]
    assert sorted(stored) == sorted([f"builds/{folder.name}/{path}" for path in listed] + [f"builds/{folder.name}/manifest.json", "builds/LATEST"])
    assert all(stored[f"builds/{folder.name}/{path}"] == (folder / path).read_bytes() for path in [*listed, "manifest.json"])
    assert stored["builds/LATEST"] == f"{folder.name}\n".encode()
    assert (first["uploaded"], first["skipped"], first["manifest_written"], first["latest"]) == (3, 0, True, True)
    assert first["uri"] == f"s3://{bucket}/builds/{folder.name}" and "testing" not in first["uri"]  # no keys, no query
    again = publish_build(Lake.at(tmp_path / "lake"), folder.name, s3_server.uri(bucket, "builds"))
    assert (again["uploaded"], again["skipped"], again["manifest_written"]) == (0, 3, False)
    assert objects(s3_server, bucket) == stored


def test_the_command_publishes_and_says_how_to_train_on_it(tmp_path, s3_server, capsys):
    folder = finished_build(tmp_path / "lake")
    bucket = s3_server.bucket("publish-command")
    assert main(["lake", "publish", "latest", s3_server.uri(bucket, "p"), "--lake", str(tmp_path / "lake")]) == 0
    out = capsys.readouterr().out
    assert f"published build {folder.name} to s3://{bucket}/p/{folder.name}: 3 files, 3 uploaded" in out
    assert f"--build s3://{bucket}/p/{folder.name}" in out


def test_build_publish_to_publishes_the_build_it_made(tmp_path, s3_server, monkeypatch, capsys):
    folder = finished_build(tmp_path / "lake")
    (tmp_path / "lake" / "raw").mkdir()
    manifest = json.loads((folder / "manifest.json").read_text())
    made = {"build_id": folder.name, **{key: manifest[key] for key in ("files", "staging")}}
    monkeypatch.setattr("pipelines.build.run_build", lambda settings, **kwargs: made)
    monkeypatch.setattr("trajforge.cluster.warn_if_cpus_taken", lambda *args: None)
    bucket = s3_server.bucket("publish-after-build")
    code = main(["build", "--lake", str(tmp_path / "lake"), "--no-embed", "--json", "--publish-to", s3_server.uri(bucket, "b")])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["published"]["uri"] == f"s3://{bucket}/b/{folder.name}" and printed["published"]["uploaded"] == 3
    assert f"b/{folder.name}/manifest.json" in objects(s3_server, bucket)


def test_a_destination_pyarrow_cannot_open_is_refused_before_the_build(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("pipelines.build.run_build", lambda settings, **kwargs: pytest.fail("the build ran"))
    monkeypatch.setattr("trajforge.cluster.warn_if_cpus_taken", lambda *args: None)
    (tmp_path / "lake" / "raw").mkdir(parents=True)
    assert main(["build", "--lake", str(tmp_path / "lake"), "--no-embed", "--publish-to", "nosuch://bucket/prefix"]) == 2
    assert "nosuch://bucket/prefix: pyarrow cannot open this URI" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="S3 takes its options in the query"):
        lake_fs.open_uri("s3://bucket/prefix?no_such_option=1")
    assert main(["build", "--lake", str(tmp_path / "lake"), "--no-embed", "--publish-to", "s3://"]) == 2  # no bucket: not after the build
    assert "s3://: names no bucket; write s3://<bucket>/<prefix>" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="names no bucket"):
        lake_fs.open_uri("gs:///prefix")


def test_a_file_uri_gets_every_file_renamed_into_place_and_latest_never_moves_back(tmp_path):
    older = finished_build(tmp_path / "lake", "20260101T000000Z-0001")
    newer = finished_build(tmp_path / "lake", "20260102T000000Z-0002")
    destination = f"file://{tmp_path / 'shared'}"
    publish_build(Lake.at(tmp_path / "lake"), newer.name, destination)
    result = publish_build(Lake.at(tmp_path / "lake"), older.name, destination)
    assert result["latest"] is False and (tmp_path / "shared" / "LATEST").read_text() == f"{newer.name}\n"
    published = tmp_path / "shared" / older.name
    assert (published / "manifest.json").read_bytes() == (older / "manifest.json").read_bytes()
    assert sorted(path.name for path in (published / "sft").iterdir()) == ["part-00000.parquet", "part-00001.parquet"]  # no temporary left


def test_a_build_id_published_there_from_another_lake_is_refused(tmp_path):
    finished_build(tmp_path / "one")
    other = finished_build(tmp_path / "two")
    manifest = json.loads((other / "manifest.json").read_text())
    (other / "manifest.json").write_text(json.dumps({**manifest, "config_hash": "other"}))
    destination = f"file://{tmp_path / 'shared'}"
    publish_build(Lake.at(tmp_path / "one"), "latest", destination)
    with pytest.raises(TrajforgeError, match=f"already holds a build {other.name} with another manifest.json"):
        publish_build(Lake.at(tmp_path / "two"), "latest", destination)


def test_an_org_build_moves_its_own_marker(tmp_path):
    finished_build(tmp_path / "lake", org="acme")
    publish_build(Lake.at(tmp_path / "lake"), "latest", f"file://{tmp_path / 'shared'}")
    assert (tmp_path / "shared" / "LATEST.org=acme").is_file() and not (tmp_path / "shared" / "LATEST").exists()


def test_a_bucket_that_does_not_exist_is_named(tmp_path, s3_server):
    finished_build(tmp_path / "lake")
    with pytest.raises(TrajforgeError, match=r"s3://no-such-bucket/p/.*: uploading it failed \(.*\); the bucket does not exist: create it first"):
        publish_build(Lake.at(tmp_path / "lake"), "latest", s3_server.uri("no-such-bucket", "p"))


def test_a_local_destination_that_cannot_be_written_names_the_path_not_the_uri_form(tmp_path, capsys):
    finished_build(tmp_path / "lake")
    (tmp_path / "a-file").write_text("not a folder")
    uri = (tmp_path / "a-file" / "builds").as_uri()
    assert main(["lake", "publish", "latest", uri, "--lake", str(tmp_path / "lake")]) == 2
    err = capsys.readouterr().err
    assert f"{uri}/" in err and "check the local path" in err
    assert "absolute path" not in err  # the URI was absolute: that advice sent the reader the wrong way


@pytest.mark.parametrize("body", ["not json", "[]", '{"build_id": "x"}'])
def test_a_damaged_local_manifest_is_named_not_a_traceback(tmp_path, capsys, body):
    folder = finished_build(tmp_path / "lake")
    (folder / "manifest.json").write_text(body)
    assert main(["lake", "publish", "latest", (tmp_path / "shared").as_uri(), "--lake", str(tmp_path / "lake")]) == 2
    assert f"{folder / 'manifest.json'}" in capsys.readouterr().err  # it was a JSONDecodeError or AttributeError traceback
    assert not (tmp_path / "shared").exists()
