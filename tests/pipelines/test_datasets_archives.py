"""Dataset releases as archives (pipelines/datasets/archives.py): a GitHub-style zip of a repository and a tarball with
`archive_path` read like the folder or file they hold, kept once (the archive in source/, nothing unpacked left), record
locations naming the member; unsafe or damaged archives and a wrong `archive_path` refused by name."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest
from datasets_lake import SAMPLES, config, sample_catalog, sha256

from pipelines.datasets.archives import readable_source
from pipelines.datasets.ingest import ingest_dataset
from pipelines.datasets.readers import CorruptRecord
from pipelines.datasets.settings import load_datasets_settings
from trajforge.errors import ConfigError


def github_zip(folder: Path, target: Path, top: str) -> Path:
    """`folder` zipped as GitHub's archive of a repository is: every file under `<top>/`."""
    with zipfile.ZipFile(target, "w") as archive:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            archive.write(path, f"{top}/{path.relative_to(folder).as_posix()}")
    return target


def tarball(target: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(target, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return target


def ingest(tmp_path: Path, name: str, **spec):
    catalog = sample_catalog()
    catalog[name].update(spec)
    settings = load_datasets_settings(config(tmp_path, {name: catalog[name]}))
    return ingest_dataset(name, settings.catalog[name], settings, progress=False), settings.lake / "raw" / "datasets" / name


def test_a_github_zip_of_a_repository_reads_as_its_folder_and_only_the_archive_is_kept(tmp_path):
    _, from_folder = ingest(tmp_path / "folder", "smellycode")
    archive = github_zip(SAMPLES / "smellycode", tmp_path / "SmellyCodeDataset-70d987a.zip", "SmellyCodeDataset-70d987a")
    result, folder = ingest(tmp_path / "zip", "smellycode", source=str(archive), sha256=sha256(archive), size=archive.stat().st_size)
    assert result.status == "ingested" and result.not_converted == ingest(tmp_path / "again", "smellycode")[0].not_converted
    assert result.not_converted  # SmellyCode has no refactored code: every smell is counted, read from inside the zip
    assert [p.name for p in (folder / "source").iterdir()] == [archive.name]
    assert not list(folder.rglob("GroundTruth.csv")) and not (folder / "unpacked").exists()
    assert (folder / "_ingest.json").read_text().count("SmellyCodeDataset-70d987a.zip!") >= 1  # examples name the member
    assert [p.read_text() for p in sorted((folder / "normalized").glob("*.jsonl"))] == \
        [p.read_text() for p in sorted((from_folder / "normalized").glob("*.jsonl"))]


def test_archive_path_picks_the_data_folder_and_a_damaged_line_is_named_inside_the_archive(tmp_path):
    data = (SAMPLES / "commitpackft" / "data.jsonl").read_bytes()
    good = tarball(tmp_path / "commitpackft.tar.gz", {"README.md": b"# not data\n", "data/python/data.jsonl": data})
    result, folder = ingest(tmp_path / "good", "commitpackft", source=str(good), sha256=sha256(good), size=good.stat().st_size,
                            archive_path="data/python")
    assert result.status == "ingested" and result.num_records == 7

    lines = data.splitlines(keepends=True)
    bad = tarball(tmp_path / "bad.tar.gz", {"data/python/data.jsonl": b"".join(lines[:2]) + b"{not json\n" + b"".join(lines[2:])})
    with pytest.raises(CorruptRecord, match=r"bad\.tar\.gz!data/python/data\.jsonl:3") as caught:
        ingest(tmp_path / "bad", "commitpackft", source=str(bad), sha256=sha256(bad), size=bad.stat().st_size)
    assert "unpacked" not in str(caught.value)


def test_an_archive_path_it_does_not_hold_is_named_with_what_it_holds(tmp_path):
    archive = tarball(tmp_path / "a.tar.gz", {"data/python/data.jsonl": b"{}\n"})
    with pytest.raises(ConfigError, match=r"archive_path 'data/java' is not in a\.tar\.gz \(it holds data\)"):
        ingest(tmp_path, "commitpackft", source=str(archive), sha256=sha256(archive), size=archive.stat().st_size, archive_path="data/java")
    with pytest.raises(ConfigError, match="archive_path is for an archive source"):
        ingest(tmp_path / "plain", "commitpackft", archive_path="data")


@pytest.mark.parametrize("member", ["../escaped.jsonl", "/etc/escaped.jsonl"])
def test_a_member_that_would_land_outside_is_refused_and_nothing_is_written_there(tmp_path, member):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as opened:
        opened.writestr("data.jsonl", b"{}\n")
        opened.writestr(member, b"{}\n")
    scratch = tmp_path / "deep" / "scratch"
    scratch.mkdir(parents=True)
    with pytest.raises(CorruptRecord, match="would be unpacked outside its folder"), readable_source(archive, scratch, None):
        pass
    assert not list(tmp_path.rglob("escaped.jsonl")) and not (scratch / "unpacked").exists()


def test_a_link_member_or_a_damaged_archive_is_refused(tmp_path):
    linked = tmp_path / "link.tar.gz"
    with tarfile.open(linked, "w:gz") as opened:
        info = tarfile.TarInfo("data.jsonl")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        opened.addfile(info)
    with pytest.raises(CorruptRecord, match="is a link or a special file"), readable_source(linked, tmp_path, None):
        pass
    damaged = tmp_path / "damaged.zip"
    damaged.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CorruptRecord, match=r"damaged\.zip: not a readable \.zip archive .*fetch it again"), readable_source(damaged, tmp_path, None):
        pass
