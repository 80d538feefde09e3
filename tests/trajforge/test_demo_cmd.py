"""`trajforge demo`'s teacher tasks: a file of all synthetic tasks but the held-out ones (replaced atomically), beside the
processed datasets' train split."""

from __future__ import annotations

import json

import pytest

TASKS = [{"task_id": f"synth-{language}-{index}", "language": language} for language in ("java", "python") for index in range(4)]


class Killed(BaseException):
    """Stands for a SIGKILL: nothing after it runs."""


@pytest.fixture
def demo(tmp_path, monkeypatch):
    from pipelines import synth_rules, teacher_srl

    tasks_file = tmp_path / "tasks.jsonl"
    tasks_file.write_text("".join(json.dumps(task) + "\n" for task in TASKS))
    (tmp_path / "report.md").write_text("report\n")
    report = {"num_records": len(TASKS), "candidates": len(TASKS), "by_language": {"java": 4, "python": 4}, "path": str(tasks_file)}
    monkeypatch.setattr(synth_rules, "run", lambda lake, workers: report)
    monkeypatch.setattr(teacher_srl, "load_teacher_settings", lambda assignments: dict(assignments))
    taught = []
    monkeypatch.setattr(teacher_srl, "run", lambda settings: taught.append(settings) or {
        "ran": 4, "skipped_finished": 0, "verified": 4, "report": str(tmp_path / "report.md")})
    return tmp_path / "runs", taught


def test_the_teacher_gets_every_task_but_the_held_out_ones(demo, tmp_path):
    from trajforge.cli.demo_cmd import HELD_OUT_PER_LANGUAGE, _synth_and_teach

    runs, taught = demo
    held_out = _synth_and_teach(tmp_path / "lake", runs)
    assert len(held_out) == 2 * HELD_OUT_PER_LANGUAGE
    given = [json.loads(line) for line in (runs / "demo-teacher-tasks.jsonl").read_text().splitlines()]
    assert sorted(task["task_id"] for task in given + held_out) == sorted(task["task_id"] for task in TASKS)
    synthetic, processed = taught[0]["teacher.tasks"]  # and the processed datasets' train split (seed 002 8.2)
    assert synthetic["path"] == str(runs / "demo-teacher-tasks.jsonl") and processed == {"source": "processed", "splits": ["train"]}


def test_a_demo_killed_while_writing_the_teacher_tasks_leaves_the_last_ones_whole(demo, tmp_path, monkeypatch):
    import trajforge.atomic

    runs, taught = demo
    runs.mkdir()
    (runs / "demo-teacher-tasks.jsonl").write_text("the last demo's tasks\n")

    def killed(path):
        raise Killed  # written, not yet durable nor in place

    monkeypatch.setattr(trajforge.atomic, "fsync_file", killed)
    from trajforge.cli.demo_cmd import _synth_and_teach

    with pytest.raises(Killed):
        _synth_and_teach(tmp_path / "lake", runs)
    assert [path.name for path in runs.iterdir()] == ["demo-teacher-tasks.jsonl"] and not taught
    assert (runs / "demo-teacher-tasks.jsonl").read_text() == "the last demo's tasks\n"


@pytest.mark.parametrize("steps", ["0", "-3"])
def test_train_steps_below_one_are_refused_by_the_parser_before_anything_starts(tmp_path, capsys, steps):
    """--train-steps 0 started Ray, Serve and the whole demo, and failed at the training step a minute later."""
    from trajforge.cli.main import main

    with pytest.raises(SystemExit) as refused:
        main(["demo", "--train-steps", steps, "--lake", str(tmp_path / "lake"), "--runs", str(tmp_path / "runs")])
    assert refused.value.code == 2 and f"--train-steps: {steps} is not at least 1" in capsys.readouterr().err
    assert not (tmp_path / "lake").exists() and not (tmp_path / "runs").exists()


def test_sessions_that_are_not_a_folder_of_recordings_are_a_usage_error_on_stderr(tmp_path, capsys):
    """It printed `no recorded sessions in X` on stdout and exited 1, saying neither what was wrong nor what to give."""
    from trajforge.cli.main import main

    (tmp_path / "empty").mkdir()
    (tmp_path / "afile").write_text("x\n")
    base = ["demo", "--lake", str(tmp_path / "lake"), "--runs", str(tmp_path / "runs"), "--port", "8689"]
    for name, what in (("nope", "does not exist"), ("afile", "is not a folder"), ("empty", "has no recorded sessions (*.json)")):
        assert main([*base, "--sessions", str(tmp_path / name)]) == 2
        out, err = capsys.readouterr()
        assert f"trajforge demo: --sessions: {tmp_path / name} {what}: give a folder of recorded sessions such as" in err, err
        assert out == ""
    assert not (tmp_path / "lake").exists() and not (tmp_path / "runs").exists()


def test_the_demo_publishes_its_build_and_syncs_its_raw_lake_to_the_folder_standing_for_a_bucket(tmp_path, capsys):
    """The demo's copies go to `lake/shared/` (a bucket on a cluster): a refusal of URIs in the lake's folder once
    stopped `make demo` there, and nothing but the demo itself ran this step."""
    from published_builds import finished_build

    from trajforge.cli.demo_cmd import _publish

    lake = tmp_path / "lake"
    build = finished_build(lake, "20260101T000000Z-0001")
    segment = lake / "raw" / "envelopes" / "date=2026-01-01" / "segment-000001.jsonl"
    segment.parent.mkdir(parents=True)
    segment.write_bytes(b'{"n": 1}\n')
    _publish(lake, build.name)
    assert (lake / "shared" / "builds" / build.name / "manifest.json").read_bytes() == (build / "manifest.json").read_bytes()
    assert (lake / "shared" / "lake" / "raw" / "envelopes" / "date=2026-01-01" / "segment-000001.jsonl").read_bytes() == b'{"n": 1}\n'
    assert "published build" in capsys.readouterr().out
