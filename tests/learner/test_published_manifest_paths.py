"""A published build's manifest is written by whoever can write the shared bucket: its sft paths and build id become
paths on the learner's disk, and its `LATEST.org=` marker may be shared by two organisations."""

from __future__ import annotations

import json
import shutil

import pytest
from published_builds import finished_build

from learner.sources import prepare_source
from pipelines.build.publish import publish_build
from trajforge.errors import LakeCorruption, TrajforgeError
from trajforge.lake import Lake


def published(tmp_path, org=None):
    folder = finished_build(tmp_path / "lake", org=org)
    publish_build(Lake.at(tmp_path / "lake"), folder.name, f"file://{tmp_path / 'shared'}")  # an org's build moves its marker there
    return tmp_path / "shared" / folder.name


def rewrite_manifest(folder, change):
    manifest = json.loads((folder / "manifest.json").read_text())
    change(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_an_sft_path_that_leaves_the_sft_folder_is_refused_and_nothing_is_written_outside_the_cache(tmp_path):
    folder = published(tmp_path)
    first = next(entry for entry in json.loads((folder / "manifest.json").read_text())["files"] if entry["path"].startswith("sft/"))
    shutil.copy(folder / first["path"], tmp_path / "shared" / "planted.parquet")  # what `sft/../../planted.parquet` reaches

    def escape(manifest):
        next(entry for entry in manifest["files"] if entry["path"] == first["path"])["path"] = "sft/../../planted.parquet"

    rewrite_manifest(folder, escape)
    with pytest.raises(LakeCorruption, match=r"lists 'sft/\.\./\.\./planted\.parquet', which is no file of a build's sft folder"):
        prepare_source(Lake.at(tmp_path / "elsewhere"), f"file://{folder}", 1.0, tmp_path / "cache" / "builds")
    assert not (tmp_path / "cache" / "planted.parquet").exists() and not list((tmp_path / "cache").rglob("*.parquet"))


def test_a_build_id_that_would_name_a_folder_elsewhere_is_refused(tmp_path):
    folder = published(tmp_path)
    rewrite_manifest(folder, lambda manifest: manifest.update(build_id="../../outside"))
    with pytest.raises(LakeCorruption, match=r"build_id '\.\./\.\./outside' is no build id"):
        prepare_source(Lake.at(tmp_path / "elsewhere"), f"file://{folder}", 1.0, tmp_path / "cache" / "builds")
    assert not (tmp_path / "outside").exists() and not (tmp_path / "cache").exists()


def test_latest_of_an_org_never_trains_on_another_org_sharing_its_marker(tmp_path):
    published(tmp_path, org="acme+corp")  # its marker is LATEST.org=acme_corp, which acme~corp would read too
    with pytest.raises(TrajforgeError, match="of org 'acme\\+corp', not of 'acme~corp'"):
        prepare_source(Lake.at(tmp_path / "elsewhere"), f"file://{tmp_path / 'shared'}/latest:acme~corp", 1.0, tmp_path / "cache")
    assert prepare_source(Lake.at(tmp_path / "elsewhere"), f"file://{tmp_path / 'shared'}/latest:acme+corp", 1.0, tmp_path / "cache").train_rows == 9
