"""The build turns the processed public code-edit datasets (`lake/processed/datasets/`) into sft rows: the chat and its
loss, provenance, splits with test held out, redaction, dedup, the switch, incremental reuse, and builds without them."""

from __future__ import annotations

import hashlib
import json
import shutil

import duckdb
import pytest
from build_lake import write_teacher_records
from processed_datasets import record, write_processed

from pipelines.build import load_build_settings, run_build
from trajforge.cli.build_cmd import summary
from trajforge.lake import Lake

pytestmark = pytest.mark.usefixtures("serve_url")
SECRET = "ghp_" + "R7tXk2Lm9QvB4nWc8YdZ1pHs6JfGa3Ue0KoT"
OTHER_SECRET = "ghp_" + "Q9wE2rT7yU4iO1pA6sD3fG8hJ5kL0zX7cV2b"
SUM = record("commitpackft", "Use sum() to total the cart", "def total(items):\n    result = 0\n    for i in items:\n        result += i\n    return result\n",
             "def total(items):\n    return sum(items)\n", tags=["path:shop/cart.py", "license:mit", "commit:" + "a" * 40, "repo:example-org/shop"])
GUARD = record("oce_dataft", "guard against an empty list", "def mean(v):\n    return sum(v) / len(v)\n",
               "def mean(v):\n    if not v:\n        return 0.0\n    return sum(v) / len(v)\n", tags=["path:stats.py"])
JAVA = record("commitpackft", "Make the greeting final", "class A {\n  String g = \"hi\";\n}\n", "class A {\n  final String g = \"hi\";\n}\n",
              language="java", tags=["path:A.java", "license:apache-2.0"])
HELD_OUT = record("oce_dataft", "rename x to count", "x = 0\n", "count = 0\n")
FENCED = record("oce_dataft", "document the helper", 'def f():\n    return 1\n', 'def f():\n    """Use it as\n\n    ```python\n    f()\n    ```\n    """\n    return 1\n')
LEAKY = record("commitpackft", "read the token from the environment", f'TOKEN = "{SECRET}"\n', 'import os\n\nTOKEN = os.environ["TOKEN"]\n')
LEAKY_COPY = record("oce_dataft", "read the token from the environment", f'TOKEN = "{OTHER_SECRET}"\n', 'import os\n\nTOKEN = os.environ["TOKEN"]\n')
FILES = {"python/train.jsonl": [SUM, FENCED, LEAKY, LEAKY_COPY], "python/dev.jsonl": [GUARD], "python/test.jsonl": [HELD_OUT],
         "java/train.jsonl": [JAVA]}


def settings_for(lake, **overrides):
    assignments = [("build.lake", str(lake)), ("build.cpus_per_task", 0.05), ("build.embedding.enabled", False)]
    return load_build_settings(assignments=assignments + [(f"build.{key}", value) for key, value in overrides.items()])


def sft(lake, manifest):
    folder = Lake.at(lake).build_dir(manifest["build_id"]) / "sft"
    return {row["example_id"]: row for row in duckdb.sql(f"SELECT * FROM read_parquet('{folder}/*.parquet')").to_arrow_table().to_pylist()}


def hashes(manifest):
    return {entry["path"]: entry["sha256"] for entry in manifest["files"]}


def row_of(rows, item):
    return rows[f"dataset:{item['dataset']}:{item['sha256'][:16]}"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    lake = tmp_path_factory.mktemp("datasets") / "lake"
    write_teacher_records(lake)
    write_processed(lake, FILES)
    manifest = run_build(settings_for(lake), progress=False)
    return lake, manifest, sft(lake, manifest)


def test_records_become_chats_with_the_code_after_as_the_only_loss_turn(built):
    _, manifest, rows = built
    row = row_of(rows, SUM)
    system, user, assistant = row["messages"]
    assert system["role"] == "system" and not system["loss"]
    assert user == {"role": "user", "loss": False, "content": "Use sum() to total the cart\n\nThe Python code before the change (`shop/cart.py`):\n\n"
                    "```python\ndef total(items):\n    result = 0\n    for i in items:\n        result += i\n    return result\n```"}
    assert assistant == {"role": "assistant", "loss": True, "content": "```python\ndef total(items):\n    return sum(items)\n```"}
    assert row["loss_tokens"] > 0 and row["num_tokens"] > row["loss_tokens"]
    java = row_of(rows, JAVA)["messages"]
    assert "The Java code before the change (`A.java`)" in java[1]["content"] and java[2]["content"].startswith("```java\n")
    # code that holds a Markdown fence stays inside a longer one
    assert row_of(rows, FENCED)["messages"][2]["content"].startswith("````python\n") and row_of(rows, FENCED)["messages"][2]["content"].endswith("\n````")


def test_every_row_carries_its_provenance(built):
    _, _, rows = built
    row = row_of(rows, SUM)
    assert row["source"] == "dataset" and row["session_id"] == row["example_id"] == f"dataset:commitpackft:{SUM['sha256'][:16]}"
    assert row["tier"] is None and row["score"] is None and row["reward"] is None and row["step"] is None
    assert row["provenance"] == {"source": "dataset", "session_id": row["session_id"], "contributor_id": None, "raw_ids": [SUM["sha256"]],
                                 "repos": ["example-org/shop"], "commits": ["a" * 40], "files": ["shop/cart.py"], "license": "mit",
                                 "agent_actions": 0, "outcome": None, "agent_action_ids": []}  # no agent action names its commit
    # without a licence tag, the dataset's licence from the processed manifest
    assert row_of(rows, GUARD)["provenance"]["license"] == "Apache-2.0"
    assert row_of(rows, GUARD)["provenance"]["repos"] == [] and row_of(rows, GUARD)["provenance"]["files"] == ["stats.py"]


def test_splits_are_kept_and_test_is_held_out_where_it_is(built):
    lake, manifest, rows = built
    assert row_of(rows, SUM)["split"] == "train" and row_of(rows, JAVA)["split"] == "train" and row_of(rows, GUARD)["split"] == "dev"
    assert f"dataset:oce_dataft:{HELD_OUT['sha256'][:16]}" not in rows
    assert not any(HELD_OUT["instruction"] in m["content"] for row in rows.values() for m in row["messages"])
    section = manifest["datasets"]
    assert section["sft_rows"] == {"train": 4, "dev": 1} and section["test_rows_held_out"] == 1
    test_file = lake / "processed" / "datasets" / "python" / "test.jsonl"
    assert {"path": "python/test.jsonl", "rows": 1, "sha256": hashlib.sha256(test_file.read_bytes()).hexdigest()} in section["held_out"]
    assert section["datasets"]["oce_dataft"]["test_held_out"] == 1 and section["datasets"]["commitpackft"]["license"] == "MIT"
    assert {row["source"] for row in rows.values()} == {"dataset", "teacher"}  # the sessions' rows are still there
    text = summary(manifest)
    assert "public datasets: 4 train + 1 dev sft rows from 2 datasets, 1 test records held out, 1 duplicates dropped" in text


def test_a_secret_in_a_datasets_code_is_redacted_and_copies_equal_after_it_are_dropped(built):
    lake, manifest, rows = built
    everything = json.dumps(list(rows.values()), default=str)
    assert SECRET not in everything and OTHER_SECRET not in everything
    kept = row_of(rows, LEAKY)
    assert "[REDACTED:" in kept["messages"][1]["content"]
    assert manifest["datasets"]["redactions"] and sum(manifest["datasets"]["redactions"].values()) == 2
    # the two records differ only in the secret: after redaction the later one is an exact duplicate, listed as such
    assert f"dataset:oce_dataft:{LEAKY_COPY['sha256'][:16]}" not in rows
    duplicates = duckdb.sql(f"SELECT * FROM read_parquet('{Lake.at(lake).build_dir(manifest['build_id'])}/duplicates/*.parquet')").fetchall()
    assert (f"dataset:oce_dataft:{LEAKY_COPY['sha256'][:16]}", kept["example_id"], "exact", 1.0, None, None) in duplicates


def test_the_switch_off_and_a_lake_without_processed_datasets_build_as_before(built, tmp_path):
    lake, manifest, _ = built
    bare = tmp_path / "bare"
    shutil.copytree(lake / "raw", bare / "raw")  # the same raw records, no processed datasets
    without = run_build(settings_for(bare), progress=False)
    off = run_build(settings_for(lake, **{"datasets.enabled": False}), full=True, progress=False)
    org = run_build(settings_for(lake, orgs={"acme": []}), org="acme", progress=False)
    for found in (without, off):
        assert "datasets" not in found and not any(row["source"] == "dataset" for row in sft(bare if found is without else lake, found).values())
    assert hashes(off) == hashes(without) and off["rows"] == without["rows"]
    assert "datasets" not in org  # public data belongs to no organisation
    # the datasets section does not enter the config hash: older builds stay parents, a changed prompt remakes dataset rows only
    assert settings_for(lake).content_hash() == settings_for(lake, **{"datasets.system_prompt": "other", "datasets.enabled": False}).content_hash()


def test_incremental_builds_reuse_dataset_rows_until_a_processed_file_changes(tmp_path):
    lake = tmp_path / "lake"
    write_teacher_records(lake)
    first = run_build(settings_for(lake), progress=False)  # no datasets yet
    write_processed(lake, FILES)
    second = run_build(settings_for(lake), progress=False)
    # the processed test split's task ids are new (held out from now on): the teacher's runs are built again, once
    assert second["parent_build_id"] == first["build_id"] and second["sessions"]["reused"] == 0 and second["held_out_loop"]["loop_sessions_rebuilt"]
    assert second["datasets"]["reused_from"] is None and second["datasets"]["sft_rows"] == {"train": 4, "dev": 1}
    third = run_build(settings_for(lake), progress=False)
    assert third["sessions"]["reused"] == third["sessions"]["ready"] > 0 and not third["held_out_loop"]["loop_sessions_rebuilt"]
    assert third["datasets"]["reused_from"] == second["build_id"] and hashes(third) == hashes(second)

    added = record("oce_dataft", "return early", "def f(x):\n    if x:\n        return 1\n    else:\n        return 2\n",
                   "def f(x):\n    if x:\n        return 1\n    return 2\n")
    write_processed(lake, {**FILES, "python/train.jsonl": [*FILES["python/train.jsonl"], added]})
    fourth = run_build(settings_for(lake), progress=False)
    assert fourth["parent_build_id"] == third["build_id"] and fourth["datasets"]["reused_from"] is None
    assert fourth["datasets"]["sft_rows"] == {"train": 5, "dev": 1} and row_of(sft(lake, fourth), added)["split"] == "train"
    full = run_build(settings_for(lake), full=True, progress=False)
    assert hashes(full) == hashes(fourth)

    shared = run_build(settings_for(lake, **{"datasets.train_share": {"commitpackft": 0.0}}), progress=False)
    assert shared["datasets"]["reused_from"] is None and shared["datasets"]["datasets"]["commitpackft"]["left_out_by_share"] == 3
    assert shared["datasets"]["sft_rows"] == {"train": 3, "dev": 1}  # LEAKY_COPY is no longer a copy of a kept row


def test_a_processed_file_that_differs_from_its_manifest_is_quarantined_and_the_build_goes_on(tmp_path):
    lake = tmp_path / "lake"
    write_teacher_records(lake)
    write_processed(lake, FILES)
    with open(lake / "processed" / "datasets" / "java" / "train.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record("commitpackft", "sneaked in", "a = 1\n", "a = 2\n", language="java")) + "\n")
    manifest = run_build(settings_for(lake), progress=False)
    assert manifest["datasets"]["sft_rows"] == {"train": 3, "dev": 1}
    reasons = {entry["path"]: entry["reason"] for entry in manifest["quarantine"]["records"]}
    assert "not the sha256 the processed manifest lists" in reasons["processed/datasets/java/train.jsonl"]


def test_rows_made_in_many_small_tasks_equal_those_of_one_task(built, tmp_path):
    from pipelines.build.dataset_stage import byte_ranges

    lake, manifest, _ = built
    path = lake / "processed" / "datasets" / "python" / "train.jsonl"
    ranges = byte_ranges(path, 64)
    data = path.read_bytes()
    assert len(ranges) == len(FILES["python/train.jsonl"]) and ranges[0][0] == 0 and ranges[-1][1] == len(data)
    assert all(a[1] == b[0] and data[a[1] - 1 : a[1]] == b"\n" for a, b in zip(ranges, ranges[1:]))
    small = run_build(settings_for(lake, **{"datasets.bytes_per_task": 64}), full=True, progress=False)
    assert hashes(small) == hashes(manifest) and small["datasets"]["sft_rows"] == manifest["datasets"]["sft_rows"]


def test_trajforge_stats_lists_the_dataset_rows_beside_the_other_sources(built):
    from pipelines import lake_stats

    lake, manifest, _ = built
    build_dir = Lake.at(lake).build_dir(manifest["build_id"])
    by_source = {(row["source"], row["split"]): row["rows"] for row in lake_stats.sft_sources(build_dir)}
    assert by_source[("dataset", "train")] == 4 and by_source[("dataset", "dev")] == 1 and any(source == "teacher" for source, _ in by_source)
    assert [(row["dataset"], row["license"], row["train"], row["dev"], row["test_held_out"]) for row in lake_stats.datasets(build_dir)] == [
        ("commitpackft", "MIT", 3, 0, 0), ("oce_dataft", "Apache-2.0", 1, 1, 1)]


def test_a_share_outside_zero_to_one_is_refused_naming_the_field():
    from trajforge.errors import ConfigError

    with pytest.raises(ConfigError, match="train_share"):
        settings_for("./lake", **{"datasets.train_share": {"commitpackft": 2.0}})
