"""A build of an empty lake: an empty folder builds empty tables; a path that is no lake is refused."""

from __future__ import annotations

import re

import pyarrow.parquet as pq
import pytest

from pipelines.build import load_build_settings, run_build
from trajforge.errors import ConfigError, TrajforgeError
from trajforge.lake import Lake


def settings_for(lake):
    # small CPU shares, as test_build's: a Serve cluster an earlier test module left running may hold the CPUs
    return load_build_settings(None, [("build.lake", str(lake)), ("build.embedding.enabled", False), ("build.workers", 1),
                                      ("build.cpus_per_task", 0.05)])


def test_an_empty_folder_builds_an_empty_build(tmp_path):
    lake = tmp_path / "lake"
    lake.mkdir()
    manifest = run_build(settings_for(lake), progress=False)
    assert set(manifest["rows"].values()) == {0} and manifest["quarantine"]["count"] == 0
    build_dir = Lake.at(lake).resolve_build("latest")
    assert build_dir.name == manifest["build_id"]
    for name in ("trajectories", "sft", "behavior", "duplicates"):
        assert pq.read_table(build_dir / name).num_rows == 0
    again = run_build(settings_for(lake), progress=False)  # the folder now holds that build: still an empty lake
    assert set(again["rows"].values()) == {0} and again["build_id"] != manifest["build_id"]


@pytest.mark.parametrize("make", ["missing", "not_a_lake"])
def test_a_path_that_is_no_lake_is_refused(tmp_path, make):
    lake = tmp_path / "lake"
    if make == "not_a_lake":  # e.g. --lake pointing at a source checkout
        lake.mkdir()
        (lake / "README.md").write_text("not a lake\n")
    with pytest.raises(ConfigError, match=f"{lake} {'does not exist' if make == 'missing' else 'has no raw/ folder'}; point --lake"):
        run_build(settings_for(lake), progress=False)
    assert not (lake / "curated").exists()


@pytest.mark.parametrize("switch", ["set", "TELEMETRY_REDACT"])
def test_a_build_without_redaction_warns_once_whichever_switch_turned_it_off(tmp_path, monkeypatch, caplog, switch):
    """`--set build.redaction.kinds=[]` turned redaction off without a word; TELEMETRY_REDACT=false warned once per
    settings load, and `trajforge build` with a relative --lake loads them twice (twice the warning)."""
    lake = tmp_path / "lake"
    lake.mkdir()
    if switch == "TELEMETRY_REDACT":
        monkeypatch.setenv("TELEMETRY_REDACT", "false")
    more = [("build.redaction.kinds", [])] if switch == "set" else []
    with caplog.at_level("WARNING", logger="pipelines.build"):
        load_build_settings(None, [("build.lake", "lake"), *more])  # the CLI loads them first as given (a relative --lake),
        settings = load_build_settings(None, [("build.lake", str(lake)), ("build.embedding.enabled", False), ("build.workers", 1),
                                              ("build.cpus_per_task", 0.05), *more])  # then again with absolute paths
        run_build(settings, progress=False)
    why = "build.redaction.kinds is empty" if switch == "set" else "TELEMETRY_REDACT=false"
    assert caplog.text.count("the build keeps secrets and personal data verbatim") == 1
    assert f"{why}: the build keeps secrets and personal data verbatim" in caplog.text


def test_a_build_that_is_a_file_is_named_as_one_not_sent_to_the_lakes_builds(tmp_path):
    """`train --build FILE` said "FILE is not a complete build (no manifest.json); list builds in <the default lake>"."""
    a_file = tmp_path / "build.parquet"
    a_file.write_text("x\n")
    with pytest.raises(TrajforgeError, match=rf"'{re.escape(str(a_file))}' is a file, not a build: give a build folder, a build id in "):
        Lake.at(tmp_path / "lake").resolve_build(str(a_file))
