"""Reading builds: the manifest's sha256 is checked, a damaged or missing file stops the start with a clear message."""

from __future__ import annotations

import json

import pytest
from sft_builds import rows, write_build

from learner.sources import open_split, prepare_source
from learner.train import main
from trajforge.errors import LakeCorruption, TrajforgeError
from trajforge.lake import Lake


@pytest.fixture
def build(tmp_path):
    return write_build(tmp_path / "lake", "b1", rows(12, dev=3), files=2)


def test_a_good_build_is_cached_by_split(build, tmp_path):
    source = prepare_source(Lake.at(tmp_path / "lake"), "latest", 1.0, tmp_path / "cache")
    assert (source.build_id, source.train_rows, source.dev_rows) == ("b1", 9, 3)
    assert open_split(source, "train").column("example_id").to_pylist()[:2] == ["ex_00003", "ex_00004"]
    again = prepare_source(Lake.at(tmp_path / "lake"), str(build), 2.0, tmp_path / "cache")  # by path, from the cache
    assert again.cache_dir == source.cache_dir and again.weight == 2.0


def test_rows_without_a_loss_turn_are_left_out(tmp_path):
    some = rows(6)
    for row in some[:4]:
        for message in row["messages"]:
            message["loss"] = False
    write_build(tmp_path / "lake", "b2", some)
    assert prepare_source(Lake.at(tmp_path / "lake"), "b2", 1.0, tmp_path / "cache").train_rows == 2


def test_a_corrupt_file_is_named(build, tmp_path):
    damaged = build / "sft" / "part-00001.parquet"
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    with pytest.raises(LakeCorruption, match=r"part-00001\.parquet does not match the sha256 .* restore it or rebuild"):
        prepare_source(Lake.at(tmp_path / "lake"), "b1", 1.0, tmp_path / "cache")


def test_a_missing_file_is_named(build, tmp_path):
    (build / "sft" / "part-00000.parquet").unlink()
    with pytest.raises(LakeCorruption, match=r"part-00000\.parquet is listed in .*manifest\.json but missing"):
        prepare_source(Lake.at(tmp_path / "lake"), "b1", 1.0, tmp_path / "cache")


def test_a_file_that_is_not_parquet_is_named_even_when_the_manifest_agrees(build, tmp_path):
    import hashlib

    damaged = build / "sft" / "part-00000.parquet"
    damaged.write_bytes(b"not parquet at all")
    manifest = json.loads((build / "manifest.json").read_text())
    manifest["files"][0].update(bytes=damaged.stat().st_size, sha256=hashlib.sha256(damaged.read_bytes()).hexdigest())
    (build / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(LakeCorruption, match=r"part-00000\.parquet cannot be read as Parquet"):
        prepare_source(Lake.at(tmp_path / "lake"), "b1", 1.0, tmp_path / "cache")


def test_an_absent_build_is_an_error(tmp_path):
    with pytest.raises(TrajforgeError, match="no build in"):
        prepare_source(Lake.at(tmp_path / "empty"), "latest", 1.0, tmp_path / "cache")


def test_the_command_reports_a_corrupt_build_before_starting_ray(build, tmp_path, capsys):
    (build / "sft" / "part-00001.parquet").write_bytes(b"garbage")
    code = main(["--lake", str(tmp_path / "lake"), "--build", "b1", "--set", f"learner.output_dir={tmp_path / 'runs'}"])
    assert code == 2
    error = capsys.readouterr().err
    assert "part-00001.parquet has 7 bytes, the manifest says" in error and "rebuild with `trajforge build --full`" in error


def test_a_config_typo_names_the_field(tmp_path):
    from learner.settings import load_learner_settings
    from trajforge.errors import ConfigError

    path = tmp_path / "learner.yaml"
    path.write_text("learner:\n  train:\n    max_step: 3\n")
    with pytest.raises(ConfigError, match=r"learner\.train\.max_step: unknown key"):
        load_learner_settings(path)
