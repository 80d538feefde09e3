"""The teacher SRL loop with the offline oracle: records, rewards, the report, and resuming after a stop."""

from __future__ import annotations

import json

import pytest

from pipelines.synth_templates import candidates
from pipelines.teacher_srl import load_teacher_settings, run, teacher_records


@pytest.fixture()
def task_file(tmp_path):
    tasks = [task for index, task in enumerate(candidates()) if index % 40 == 0][:10]
    path = tmp_path / "tasks.jsonl"
    path.write_text("\n".join(json.dumps(task) for task in tasks) + "\n")
    return path, tasks


def settings_for(tmp_path, tasks_path, **overrides):
    assignments = [("teacher.lake", str(tmp_path / "lake")), ("teacher.tasks", str(tasks_path)), ("teacher.reports", str(tmp_path / "reports")),
                   ("teacher.sample", 0), ("teacher.workers", 1), ("teacher.cpus_per_worker", 0.05)]
    assignments += [(f"teacher.{key}", value) for key, value in overrides.items()]
    return load_teacher_settings(assignments=assignments)


def test_oracle_run_records_rewards_and_writes_the_report(serve_url, tmp_path, task_file):
    path, tasks = task_file
    settings = settings_for(tmp_path, path, mistake_rate=0.0)
    result = run(settings, progress=False)
    assert (result["ran"], result["verified"]) == (len(tasks), len(tasks))
    records = teacher_records(settings)
    assert len(records) == len(tasks) and all(r["final"] for r in records)
    record = records[0]
    assert record["teacher"] == "oracle" and record["model"] == "oracle" and record["temperature"] == 0.7 and record["seed"] == 1
    assert record["reward"] == {"verified": True, "matches_gold": True, "tests_pass": None}
    assert "<state>" in record["prompt"]["messages"][1]["content"] and record["model_output"]["think"]
    report = (tmp_path / "reports" / "metrics.md").read_text()
    assert "| language | tasks | verified |" in report and "| oracle |" in report and "matches gold" in report


def test_mistakes_are_recorded_and_retried_with_feedback(serve_url, tmp_path, task_file):
    path, tasks = task_file
    settings = settings_for(tmp_path, path, mistake_rate=1.0, max_steps=2)
    result = run(settings, progress=False)
    records = teacher_records(settings)
    assert len(records) == 2 * len(tasks)  # every step a mistake: both steps used
    assert not any(r["reward"]["matches_gold"] for r in records)
    second_steps = [r for r in records if r["step"] == 2]
    assert all("Sandbox feedback" in r["prompt"]["messages"][1]["content"] for r in second_steps)
    assert any(r["model_output"]["errors"] for r in records) and result["ran"] == len(tasks)


def test_a_restarted_job_skips_finished_tasks(serve_url, tmp_path, task_file):
    path, tasks = task_file
    first_half = tmp_path / "first.jsonl"
    first_half.write_text("\n".join(json.dumps(task) for task in tasks[:5]) + "\n")
    assert run(settings_for(tmp_path, first_half, mistake_rate=0.0), progress=False)["ran"] == 5  # then the job "stops"
    again = run(settings_for(tmp_path, path, mistake_rate=0.0), progress=False)
    assert (again["skipped_finished"], again["ran"]) == (5, 5)
    assert sorted({r["task_id"] for r in teacher_records(settings_for(tmp_path, path))}) == sorted(t["task_id"] for t in tasks)


def test_missing_tasks_file_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="trajforge synth-rules"):
        run(settings_for(tmp_path, tmp_path / "none.jsonl"), progress=False)
