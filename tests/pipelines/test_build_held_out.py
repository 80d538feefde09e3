"""Teacher and actor runs of a processed test record's task stay held out: their sft rows are split test (the learner's
cache takes none of them), their trajectory rows stay, flagged; runs of a dev record's task are split dev and of a train
record's train (the dev loss is never measured on a task trained on), and every run of another task lands in its task's
split; an incremental build after the processed splits changed splits the reused runs again."""

from __future__ import annotations

import json
import shutil

import duckdb
import pytest
from build_lake import teacher_record
from processed_datasets import record, write_processed

from learner.sources import open_split, prepare_source
from pipelines.build import load_build_settings, run_build
from pipelines.build.held_out import task_of
from pipelines.build.process import split_of
from trajforge.cli.build_cmd import summary
from trajforge.lake import Lake

pytestmark = pytest.mark.usefixtures("serve_url")
TEST_A = record("oce_dataft", "rename x to count", "x = 0\n", "count = 0\n")
TEST_B = record("commitpackft", "use an f-string", "s = 'a' + b\n", "s = f'a{b}'\n")
TRAIN = record("commitpackft", "Use sum() to total the cart", "t = 0\nfor i in v:\n    t += i\n", "t = sum(v)\n")
DEV = record("commitpackft", "Add a docstring to total", "def total(v):\n    return sum(v)\n", 'def total(v):\n    """Sum."""\n    return sum(v)\n')
SYNTH = "synth-rename-count-1"  # a synthetic task: no processed record, run twice
FILES = {"python/train.jsonl": [TRAIN], "python/dev.jsonl": [DEV], "python/test.jsonl": [TEST_A, TEST_B]}


def solved_run(task: str, run: str, source: str) -> list[dict]:
    records = [teacher_record(task, run, 1, valid=False, gold=None, final=False), teacher_record(task, run, 2, valid=True, gold=True, final=True)]
    for item in records:
        if source == "actor":
            del item["teacher"]  # an actor's record names its engine, no teacher
    return records


def write_runs(lake) -> None:
    folder = lake / "raw" / "trajectories"
    folder.mkdir(parents=True, exist_ok=True)
    runs = [*solved_run(TEST_A["task_id"], "r1", "teacher"), *solved_run(TEST_B["task_id"], "r2", "actor"),
            *solved_run(TRAIN["task_id"], "r3", "teacher"), *solved_run(DEV["task_id"], "r4", "teacher"), *solved_run(SYNTH, "r5", "teacher"),
            *solved_run(SYNTH, "r6", "actor")]
    for item in runs[-2:]:  # the second run of the synthetic task answers otherwise (the same answer twice is one, deduplicated)
        item["model_output"].update(think="rename every use in one pass", raw=item["model_output"]["raw"].replace("use a rewrite", "rename every use in one pass"))
    (folder / "loop0.jsonl").write_text("".join(json.dumps(item) + "\n" for item in runs))


def session(source: str, item: dict, run: str) -> str:
    return f"{source}:{item['task_id']}:{run}"


SESSIONS = {"test_a": session("teacher", TEST_A, "r1"), "test_b": session("actor", TEST_B, "r2"), "train": session("teacher", TRAIN, "r3"),
            "dev": session("teacher", DEV, "r4"), "synth_1": f"teacher:{SYNTH}:r5", "synth_2": f"actor:{SYNTH}:r6"}


def settings_for(lake):
    return load_build_settings(assignments=[("build.lake", str(lake)), ("build.cpus_per_task", 0.05), ("build.embedding.enabled", False)])


def table(lake, manifest, name):
    folder = Lake.at(lake).build_dir(manifest["build_id"]) / name
    return duckdb.sql(f"SELECT * FROM read_parquet('{folder}/*.parquet')").to_arrow_table().to_pylist()


def loop_rows(lake, manifest):
    """session id -> (its sft rows' splits, its trajectory row)"""
    sft, runs = table(lake, manifest, "sft"), {row["session_id"]: row for row in table(lake, manifest, "trajectories")}
    return {key: ({row["split"] for row in sft if row["session_id"] == sid}, runs.get(sid)) for key, sid in SESSIONS.items()}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    lake = tmp_path_factory.mktemp("held_out") / "lake"
    write_runs(lake)
    write_processed(lake, FILES)
    manifest = run_build(settings_for(lake), progress=False)
    return lake, manifest


def test_teacher_and_actor_runs_of_test_tasks_are_split_test_and_stay_as_flagged_runs(built):
    lake, manifest = built
    rows = loop_rows(lake, manifest)
    for key in ("test_a", "test_b"):
        splits, run = rows[key]
        assert splits == {"test"}
        assert run is not None and run["exclusion_reason"] == "held_out_test" and not run["training_eligible"] and run["outcome"] == "resolved"
    held = manifest["held_out_loop"]
    assert held["task_ids"] == 2 and held["sessions"] == {"teacher": 1, "actor": 1} and held["sft_rows"] == {"teacher": 1, "actor": 1}
    assert manifest["exclusions"]["held_out_test"] == 2
    assert "held-out test tasks: 2" in summary(manifest) and "teacher 1 sessions / 1 sft rows" in summary(manifest)


def test_the_learners_cache_takes_no_test_row(built, tmp_path):
    lake, manifest = built
    source = prepare_source(Lake.at(lake), manifest["build_id"], 1.0, tmp_path / "cache")
    cached = {i for split in ("train", "dev") for i in open_split(source, split).column("example_id").to_pylist()}
    held = {row["example_id"] for row in table(lake, manifest, "sft") if row["split"] == "test"}
    assert len(held) == 2 and not held & cached
    assert f"{SESSIONS['train']}#step002" in cached


def test_runs_of_train_and_dev_tasks_take_their_records_split_and_every_run_of_another_task_its_tasks(built):
    lake, manifest = built
    rows = loop_rows(lake, manifest)
    assert rows["train"][0] == {"train"} and rows["dev"][0] == {"dev"}  # whatever a hash of the session id would say
    for key in ("train", "dev", "synth_1", "synth_2"):
        assert rows[key][1]["exclusion_reason"] is None and rows[key][1]["training_eligible"]
    assert rows["synth_1"][0] == rows["synth_2"][0] == {split_of(SYNTH, settings_for(lake).sft.dev_fraction)}
    assert manifest["held_out_loop"]["task_ids"] == 2 and TRAIN["task_id"] not in SESSIONS["test_a"] + SESSIONS["test_b"]  # read, and not held out


def test_a_changed_test_file_is_quarantined_and_its_tasks_are_held_out_all_the_same(built, tmp_path):
    lake = tmp_path / "lake"
    shutil.copytree(built[0] / "raw", lake / "raw")
    write_processed(lake, FILES)
    test_file = lake / "processed" / "datasets" / "python" / "test.jsonl"
    test_file.write_text(test_file.read_text() + "\n")
    manifest = run_build(settings_for(lake), progress=False)
    assert loop_rows(lake, manifest)["test_a"][0] == {"test"}
    assert any(entry["path"] == "processed/datasets/python/test.jsonl" for entry in manifest["quarantine"]["records"])


def test_a_lake_without_processed_datasets_splits_every_run_by_its_hash(built, tmp_path):
    lake = tmp_path / "lake"
    shutil.copytree(built[0] / "raw", lake / "raw")
    manifest = run_build(settings_for(lake), progress=False)
    dev_fraction = settings_for(lake).sft.dev_fraction
    for key, (splits, run) in loop_rows(lake, manifest).items():
        assert splits == {split_of(task_of(SESSIONS[key]), dev_fraction)} and run["exclusion_reason"] is None
    assert manifest["held_out_loop"]["task_ids"] == 0 and manifest["held_out_loop"]["sessions"] == {"teacher": 0, "actor": 0}
    assert "held-out test tasks" not in summary(manifest)


def test_an_incremental_build_after_the_test_set_changed_splits_the_runs_again(tmp_path):
    lake = tmp_path / "lake"
    write_runs(lake)
    write_processed(lake, FILES)
    settings = settings_for(lake)
    first = run_build(settings, progress=False)
    same = run_build(settings, progress=False)
    assert same["parent_build_id"] == first["build_id"] and same["sessions"]["reused"] == 6 and not same["held_out_loop"]["loop_sessions_rebuilt"]
    assert loop_rows(lake, same)["test_a"][0] == {"test"}
    write_processed(lake, {"python/train.jsonl": [TEST_A, TEST_B], "python/dev.jsonl": [DEV], "python/test.jsonl": [TRAIN]})  # a new split
    changed = run_build(settings, progress=False)
    assert changed["parent_build_id"] == same["build_id"] and changed["held_out_loop"]["loop_sessions_rebuilt"]
    assert changed["sessions"]["reused"] == 0 and changed["sessions"]["built"] == 6
    rows = loop_rows(lake, changed)
    assert rows["train"][0] == {"test"} and rows["train"][1]["exclusion_reason"] == "held_out_test"
    for key in ("test_a", "test_b"):
        assert rows[key][0] == {"train"} and rows[key][1]["exclusion_reason"] is None
    assert changed["held_out_loop"]["sessions"] == {"teacher": 1, "actor": 0}
