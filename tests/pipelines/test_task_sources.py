"""The teacher's task sources (pipelines/task_sources.py): weights, the seed, languages, duplicates, the held-out test split."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from pipelines.synth_rules import tasks_file
from pipelines.synth_templates import candidates
from pipelines.task_sources import SOURCE_KEY, TasksMissing, allocate
from pipelines.teacher_srl import absolute_teacher_settings, load_tasks, load_teacher_settings
from processed_datasets import record, write_processed
from trajforge.cli.main import main
from trajforge.errors import ConfigError

SYNTH = candidates()[:60]


def python_record(index: int, split_tag: str = "") -> dict:
    return record("commitpackft", f"Return {index + 1} from f{split_tag}.", f"def f():\n    return {index}\n",
                  f"def f():\n    return {index + 1}\n")


def java_record(index: int) -> dict:
    return record("oce_dataft", f"Make g return {index + 1}.", f"class A {{\n  int g() {{ return {index}; }}\n}}\n",
                  f"class A {{\n  int g() {{ return {index + 1}; }}\n}}\n", language="java")


@pytest.fixture()
def lake(tmp_path) -> Path:
    """Synthetic tasks, and processed python (30 train, 4 test) and java (10 train) records."""
    lake = tmp_path / "lake"
    path = tasks_file(lake)
    path.parent.mkdir(parents=True)
    path.write_text("".join(json.dumps(task) + "\n" for task in SYNTH))
    write_processed(lake, {"python/train.jsonl": [python_record(index) for index in range(30)],
                           "python/test.jsonl": [python_record(100 + index, " (held out)") for index in range(4)],
                           "java/train.jsonl": [java_record(index) for index in range(10)]})
    return lake


def settings(lake: Path, tasks, **overrides):
    assignments = [("teacher.lake", str(lake)), ("teacher.tasks", tasks)]
    return load_teacher_settings(assignments=assignments + [(f"teacher.{key}", value) for key, value in overrides.items()])


MIXED = [{"source": "synth_rules", "weight": 1}, {"source": "processed", "splits": ["train"], "weight": 3}]


def by_source(tasks: list[dict]) -> Counter:
    return Counter(task[SOURCE_KEY] for task in tasks)


def test_a_sample_is_shared_by_weight_and_the_same_for_the_same_seed(lake):
    first = load_tasks(settings(lake, MIXED, sample=20, seed=3))
    assert by_source(first) == {"synth_rules": 5, "processed:train": 15}
    assert [task["task_id"] for task in first] == sorted(task["task_id"] for task in first)
    assert first == load_tasks(settings(lake, MIXED, sample=20, seed=3))  # deterministic with the seed
    other = load_tasks(settings(lake, MIXED, sample=20, seed=4))
    assert by_source(other) == by_source(first) and {t["task_id"] for t in other} != {t["task_id"] for t in first}
    # a source with fewer tasks than its share gives all it has; the others make up the rest
    heavy = load_tasks(settings(lake, [{"source": "synth_rules", "weight": 1}, {"source": "processed", "weight": 100}], sample=50))
    assert by_source(heavy) == {"processed:train": 40, "synth_rules": 10}
    # sample 0: every task of every source, test split left out
    everything = load_tasks(settings(lake, MIXED, sample=0))
    assert by_source(everything) == {"synth_rules": 60, "processed:train": 40}


def test_languages_are_chosen_and_balanced_when_asked(lake):
    only_java = load_tasks(settings(lake, [{"source": "processed", "languages": ["java"], "name": "oce"}], sample=0))
    assert {task["language"] for task in only_java} == {"java"} and by_source(only_java) == {"oce": 10}
    balanced = load_tasks(settings(lake, [{"source": "processed", "balance_languages": True}], sample=12))
    assert Counter(task["language"] for task in balanced) == {"python": 6, "java": 6}
    scarce = load_tasks(settings(lake, [{"source": "processed", "balance_languages": True}], sample=30))
    assert Counter(task["language"] for task in scarce) == {"python": 20, "java": 10}  # java has only 10


def test_a_task_id_given_by_two_sources_is_taken_once_from_the_first(lake, tmp_path):
    extra = tmp_path / "extra.jsonl"
    new = {**SYNTH[0], "task_id": "mine-1"}
    extra.write_text("".join(json.dumps(task) + "\n" for task in [*SYNTH[:5], new]))
    tasks = load_tasks(settings(lake, [{"source": "synth_rules"}, {"path": str(extra), "name": "mine"}], sample=0))
    assert len(tasks) == len({task["task_id"] for task in tasks}) == 61
    assert by_source(tasks) == {"synth_rules": 60, "mine": 1}
    sampled = load_tasks(settings(lake, [{"source": "synth_rules"}, {"path": str(extra), "name": "mine"}], sample=61))
    assert len(sampled) == 61  # the sample counts the ids once too


def test_one_path_or_null_samples_as_before(lake):
    old = sorted(random.Random(7).sample(SYNTH, 9), key=lambda task: task["task_id"])  # what load_tasks drew before sources
    for tasks in (None, str(tasks_file(lake))):
        drawn = load_tasks(settings(lake, tasks, sample=9, seed=7))
        assert [task["task_id"] for task in drawn] == [task["task_id"] for task in old]


def test_the_processed_test_split_is_refused_unless_the_run_evaluates(lake, capsys):
    asking = [{"source": "synth_rules"}, {"source": "processed", "splits": ["train", "test"]}]
    with pytest.raises(ConfigError, match=r"teacher\.tasks\[1\]\.splits asks for the processed test split.*teacher\.evaluate=true"):
        settings(lake, asking)
    evaluated = load_tasks(settings(lake, asking, evaluate=True))
    assert len([task for task in evaluated if "(held out)" in task["instruction"]]) == 4
    test_file = lake / "processed" / "datasets" / "python" / "test.jsonl"
    with pytest.raises(ConfigError, match=r"^teacher\.tasks: 4 of its 4 tasks are in a processed test split.*teacher\.evaluate=true"):
        load_tasks(settings(lake, str(test_file)))  # one path, as before: refused all the same
    with pytest.raises(ConfigError, match=r"^teacher\.tasks\[0\]\.path: 4 of its"):
        load_tasks(settings(lake, [{"path": str(test_file)}]))
    assert len(load_tasks(settings(lake, str(test_file), evaluate=True))) == 4
    assert main(["teacher", "--lake", str(lake), "--set", "teacher.tasks=[{source: processed, splits: [test]}]"]) == 2
    assert "teacher.tasks[0].splits asks for the processed test split" in capsys.readouterr().err


def test_a_missing_processed_folder_or_language_says_what_to_run(tmp_path, lake):
    with pytest.raises(TasksMissing, match=r"no processed datasets at .*teacher\.tasks\[0\].*run `trajforge datasets --lake"):
        load_tasks(settings(tmp_path / "empty", [{"source": "processed"}]))
    with pytest.raises(ConfigError, match=r"teacher\.tasks\[0\]\.languages: no processed folder for ruby .* it has java, python"):
        load_tasks(settings(lake, [{"source": "processed", "languages": ["ruby"]}]))
    with pytest.raises(ConfigError, match=r"teacher\.tasks\.sources\.0\.weight"):
        settings(lake, [{"source": "synth_rules", "weight": 0}])
    with pytest.raises(ConfigError, match=r"teacher\.tasks\.sources\.0.*for `source: processed`"):
        settings(lake, [{"source": "synth_rules", "splits": ["train"]}])


def test_relative_task_paths_are_made_absolute_for_the_workers(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    made = absolute_teacher_settings(settings(Path("lake"), [{"path": "mine.jsonl"}, {"source": "processed"}]))
    assert made.lake == tmp_path / "lake" and made.tasks[0].path == tmp_path / "mine.jsonl" and made.tasks[1].path is None


def test_allocate_shares_by_weight_within_capacities():
    assert allocate(10, [1, 1, 1], [10, 10, 10]) == [4, 3, 3]
    assert allocate(10, [1, 3], [100, 100]) == [3, 7]  # 2.5 and 7.5: the tie goes to the earlier
    assert allocate(10, [1, 9], [100, 2]) == [8, 2]
    assert allocate(50, [1, 1], [5, 5]) == [5, 5]
