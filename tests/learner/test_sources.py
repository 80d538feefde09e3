"""Reading builds: the manifest's sha256 is checked, a damaged or missing file stops the start with a clear message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sft_builds import rows, write_build

from learner.sources import open_split, prepare_source
from learner.train import main
from trajforge.errors import ConfigError, LakeCorruption, TrajforgeError
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


def test_a_build_with_an_empty_sft_table_says_why_and_what_to_do(tmp_path):
    folder = write_build(tmp_path / "lake", "none", [])
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.update(config={"sft": {"tiers": ["TIER_A"]}}, tiers={"TIER_A": 0, "TIER_B": 2, "TIER_C": 1},
                    exclusions={"too_few_steps": 1}, sessions={"pending_open": 4})
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(TrajforgeError) as refused:
        prepare_source(Lake.at(tmp_path / "lake"), "none", 1.0, tmp_path / "cache")
    text = str(refused.value)
    assert f"build none ({folder}) has an empty sft table" in text and "training-eligible field sessions of the tiers in build.sft.tiers" in text
    assert "built with build.sft.tiers [TIER_A]; its sessions by tier: TIER_A 0, TIER_B 2, TIER_C 1" in text
    assert "excluded from training: too_few_steps 1; 4 sessions still open" in text
    assert "widen build.sft.tiers (configs/pipeline.yaml) and run `trajforge build` again" in text and "--build" in text


def test_a_build_whose_rows_are_all_dev_says_so(tmp_path):
    write_build(tmp_path / "lake", "dev-only", rows(3, dev=3))
    with pytest.raises(TrajforgeError, match=r"has 3 sft rows but no train row with a message marked for loss \(3 usable dev rows\)"):
        prepare_source(Lake.at(tmp_path / "lake"), "dev-only", 1.0, tmp_path / "cache")


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


def test_a_parquet_file_without_the_sft_columns_is_named_once_as_such(build, tmp_path):
    """It was wrapped as "cannot be read as Parquet (... has no column(s) ...; rebuild ...); restore it or rebuild ..."."""
    import hashlib

    import pyarrow as pa
    import pyarrow.parquet as pq

    other = build / "sft" / "part-00000.parquet"
    pq.write_table(pa.table({"example_id": ["a"], "text": ["hello"]}), other)
    manifest = json.loads((build / "manifest.json").read_text())
    manifest["files"][0].update(bytes=other.stat().st_size, sha256=hashlib.sha256(other.read_bytes()).hexdigest())
    (build / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(LakeCorruption) as refused:
        prepare_source(Lake.at(tmp_path / "lake"), "b1", 1.0, tmp_path / "cache")
    assert str(refused.value).startswith(f"{other} has no column(s) ") and "cannot be read as Parquet" not in str(refused.value)
    assert str(refused.value).count("rebuild") == 1


def test_an_absent_build_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrajforgeError, match="no build in"):
        prepare_source(Lake.at(tmp_path / "empty"), "latest", 1.0, tmp_path / "cache")


def test_the_command_reports_a_corrupt_build_before_starting_ray(build, tmp_path, capsys):
    (build / "sft" / "part-00001.parquet").write_bytes(b"garbage")
    code = main(["--lake", str(tmp_path / "lake"), "--build", "b1", "--set", f"learner.output_dir={tmp_path / 'runs'}"])
    assert code == 2
    error = capsys.readouterr().err
    assert "part-00001.parquet has 7 bytes, the manifest says" in error and "rebuild with `trajforge build --full`" in error


def test_making_the_small_model_writes_nothing_to_stdout(build, tmp_path):
    import os
    import subprocess
    import sys

    code = ("from learner.settings import LearnerSettings; from learner.train import prepare; "
            f"prepare(LearnerSettings.model_validate({{'small_model_dir': {str(tmp_path / 'small')!r}, "
            f"'data': {{'lake': {str(tmp_path / 'lake')!r}, 'cache_dir': {str(tmp_path / 'cache')!r}}}}}).absolute())")
    env = {name: value for name, value in os.environ.items() if name != "DS_ACCELERATOR"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "small" / "config.json").is_file() and done.stdout == ""  # stdout is the metrics' JSON lines


def test_builds_without_dev_rows_are_warned_about(tiny_model, tmp_path, caplog):
    from learner.settings import LearnerSettings
    from learner.train import prepare

    write_build(tmp_path / "lake", "b3", rows(6, dev=0))
    settings = LearnerSettings.model_validate({"model": str(tiny_model), "data": {"lake": str(tmp_path / "lake"), "cache_dir": str(tmp_path / "c")}})
    with caplog.at_level("WARNING", logger="learner.train"):
        prepare(settings.absolute())
    assert "no dev rows, so no evaluation loss" in caplog.text and "build.sft.dev_fraction" in caplog.text
    write_build(tmp_path / "lake", "b4", rows(6, dev=2))
    caplog.clear()
    prepare(settings.absolute())
    assert "no dev rows" not in caplog.text


def test_the_help_says_where_a_run_goes_and_how_it_resumes(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "<learner.output_dir>/<learner.run_name>/" in text and "JSON lines" in text and "resumes it from its last checkpoint" in text


def test_the_help_names_the_estimates_built_in_shapes_and_what_is_refused_before_the_workers(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--set learner.model=qwen3-14b (or qwen3-0.6b; also named as on the hub, Qwen/Qwen3-14B)" in text and "remove the replaced history's later checkpoints and hf/" in text
    assert "settings CPU workers cannot run (train.attention flash_attention_2 or flex_attention, train.loss liger)" in text


def test_a_config_typo_names_the_field(tmp_path):
    from learner.settings import load_learner_settings
    from trajforge.errors import ConfigError

    path = tmp_path / "learner.yaml"
    path.write_text("learner:\n  train:\n    max_step: 3\n")
    with pytest.raises(ConfigError, match=r"learner\.train\.max_step: unknown key"):
        load_learner_settings(path)


# -- how many workers, on what (learner.train.choose_workers) ---------------------------------------------
def test_auto_uses_one_worker_per_gpu_when_there_are_fewer_gpus_than_workers():
    from learner.train import choose_workers

    on_gpu, count, why = choose_workers("auto", 2, 1.0, 2)
    assert (on_gpu, count) == (True, 1)
    assert "learner.workers.count is 2 but the Ray cluster has 1 GPU(s): training with 1 worker(s), one per GPU" in why


def test_the_learner_gpus_of_the_cluster_config_cap_a_lowered_count():
    from learner.train import choose_workers

    on_gpu, count, why = choose_workers("auto", 4, 3.0, 2)
    assert (on_gpu, count) == (True, 2) and "configs/cluster.yaml gives the learner 2" in why
    assert choose_workers("auto", 4, 3.0, 0)[:2] == (True, 3)  # a learner group with no GPU count caps nothing


def test_auto_keeps_the_count_with_enough_gpus_and_the_cpu_only_without_any():
    from learner.train import choose_workers

    assert choose_workers("auto", 2, 8.0, 2) == (True, 2, None)
    assert choose_workers("auto", 2, 0.0, 2) == (False, 2, None)
    assert choose_workers("auto", 2, 0.5, 2) == (False, 2, None)  # a fraction of a GPU holds no worker
    assert choose_workers("cpu", 2, 4.0, 2) == (False, 2, None)
    assert choose_workers("gpu", 2, 1.0, 2) == (True, 2, None)  # asked for: the resource check says what is missing


def test_a_lowered_count_is_logged_as_a_warning(monkeypatch, caplog):
    import logging

    import ray

    from learner.settings import LearnerSettings
    from learner.train import placement
    from trajforge.cluster import load_cluster_settings

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 16.0, "GPU": 1.0})
    with caplog.at_level(logging.WARNING, logger="learner.train"):
        on_gpu, count, resources = placement(LearnerSettings(), load_cluster_settings())
    assert (on_gpu, count, resources["CPU"]) == (True, 1, 4.0)
    assert any(record.levelno == logging.WARNING and "learner.workers.count is 2" in record.getMessage() for record in caplog.records)


def test_the_command_refuses_a_set_it_would_ignore(capsys):
    assert main(["--set", "lerner.optim.lr=1"]) == 2
    assert "reads no config section 'lerner'; it accepts learner.*, cluster.*" in capsys.readouterr().err


def test_two_processes_caching_one_build_at_once_both_use_the_first_copy(build, tmp_path, monkeypatch):
    import learner.sources as sources

    real_batches, raced = sources._batches, []

    def batches_while_another_process_caches(build_dir, entries, where=None):
        if not raced:  # the other process finishes its cache of the same build while this one is still writing
            raced.append(None)
            raced.append(prepare_source(Lake.at(tmp_path / "lake"), "b1", 1.0, tmp_path / "cache").cache_dir)
        yield from real_batches(build_dir, entries, where)

    monkeypatch.setattr(sources, "_batches", batches_while_another_process_caches)
    source = prepare_source(Lake.at(tmp_path / "lake"), "b1", 1.0, tmp_path / "cache")
    assert source.cache_dir == raced[1] and (source.train_rows, source.dev_rows) == (9, 3)
    assert [path.name for path in (tmp_path / "cache").iterdir()] == [Path(raced[1]).name]  # no staging folder left behind


@pytest.mark.parametrize("damage", ["truncated", "emptied", "missing"])
def test_a_damaged_cache_is_made_again_not_handed_to_the_workers(build, tmp_path, caplog, damage):
    """The workers failed on it with Arrow's bare 'Not an Arrow file', after Ray had started."""
    cache = tmp_path / "cache"
    source = prepare_source(Lake.at(tmp_path / "lake"), "b1", 1.0, cache)
    arrow = source.path("train")
    if damage == "missing":
        arrow.unlink()
    else:
        arrow.write_bytes(arrow.read_bytes()[:300] if damage == "truncated" else b"")
    with caplog.at_level("WARNING", logger="learner.sources"):
        again = prepare_source(Lake.at(tmp_path / "lake"), "b1", 1.0, cache)
    assert "is damaged" in caplog.text and again.cache_dir == source.cache_dir
    assert open_split(again, "train").num_rows == again.train_rows == 9


def test_where_keeps_the_rows_a_duckdb_condition_keeps_and_caches_them_apart(tmp_path):
    made = rows(12, dev=3)
    for index, row in enumerate(made):  # every third row's agent work was rejected by its owners (the build's labels)
        row["provenance"].update(agent_actions=1, outcome="rejected" if index % 3 == 0 else "accepted", agent_action_ids=[f"a{index}"])
        row["source"] = "teacher" if index % 2 else "ingest"
    write_build(tmp_path / "lake", "b3", made, files=2)
    lake, cache = Lake.at(tmp_path / "lake"), tmp_path / "cache"
    everything = prepare_source(lake, "b3", 1.0, cache)
    kept = prepare_source(lake, "b3", 1.0, cache, where="provenance.outcome IS DISTINCT FROM 'rejected'")
    assert (everything.train_rows, everything.dev_rows) == (9, 3) and (kept.train_rows, kept.dev_rows) == (6, 2)
    assert kept.cache_dir != everything.cache_dir and kept.where == "provenance.outcome IS DISTINCT FROM 'rejected'"
    assert all(int(example[3:]) % 3 for example in open_split(kept, "train").column("example_id").to_pylist())
    teacher = prepare_source(lake, "b3", 1.0, cache, where="source = 'teacher' AND split = 'train'")
    assert (teacher.train_rows, teacher.dev_rows) == (5, 0)


def test_a_where_duckdb_cannot_use_or_that_keeps_no_train_row_says_so(build, tmp_path):
    lake, cache = Lake.at(tmp_path / "lake"), tmp_path / "cache"
    with pytest.raises(ConfigError, match=r"learner.data.builds\[\].where 'no_such_column = 1': DuckDB cannot use it"):
        prepare_source(lake, "b1", 1.0, cache, where="no_such_column = 1")
    with pytest.raises(TrajforgeError, match="has no train row that learner.data.builds\\[\\].where \"split = 'dev'\" keeps \\(3 dev rows\\)"):
        prepare_source(lake, "b1", 1.0, cache, where="split = 'dev'")
    assert [path.name for path in cache.iterdir() if path.name.startswith(".")] == []  # no staging left by the refused one


@pytest.mark.parametrize("text", ["learnr:\n  model: x\n", "cluster:\n  learner: {gpus: 2}\n"])
def test_a_config_file_without_a_learner_section_is_refused(tmp_path, text):
    """A misspelled `learnr:` (or another component's file given as --config) trained the defaults: model small, ./lake, 100 steps."""
    from learner.settings import load_learner_settings
    from trajforge.errors import ConfigError

    path = tmp_path / "learner.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"learner\.yaml: no `learner:` section \(the file has (learnr|cluster)\)"):
        load_learner_settings(path)


def test_an_empty_config_file_or_top_level_learner_fields_keep_their_handling(tmp_path):
    from learner.settings import load_learner_settings
    from trajforge.errors import ConfigError

    path = tmp_path / "learner.yaml"
    path.write_text("")
    assert load_learner_settings(path).run_name == "sft"
    path.write_text("model: /models/x\n")
    with pytest.raises(ConfigError, match="at the top level of the file, where nothing reads it: put it under `learner:`"):
        load_learner_settings(path)
