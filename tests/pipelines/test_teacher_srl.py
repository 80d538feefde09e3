"""The teacher SRL loop with the offline oracle: records, rewards, the report, and resuming after a stop."""

from __future__ import annotations

import json

import pytest

from pipelines.synth_templates import candidates
from pipelines.teacher_srl import TasksMissing, load_teacher_settings, run, teacher_records
from sandbox.settings import load_sandbox_settings
from trajforge.cli.main import main
from trajforge.errors import TrajforgeError


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
    sandbox = load_sandbox_settings(assignments=[("sandbox.logs_dir", str(tmp_path / "sandbox-logs"))])
    result = run(settings, progress=False, sandbox=sandbox)
    assert (result["ran"], result["verified"]) == (len(tasks), len(tasks))
    assert len(list((tmp_path / "sandbox-logs").glob("*.jsonl"))) == len(tasks)  # the workers' jails got the sandbox settings
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


def test_the_teacher_checks_its_workers_cpus_before_it_starts_them(serve_url, tmp_path, task_file, monkeypatch):
    """The workers ask Ray for `teacher.cpus_per_worker` each: the run first says when that many are not free (the
    check itself is tested against the session's Serve in tests/trajforge/test_cluster.py)."""
    import trajforge.cluster

    asked = []

    class Stop(Exception):
        pass

    def check(cpus, setting, who):
        asked.append((cpus, setting, who))
        raise Stop  # before the workers start

    monkeypatch.setattr(trajforge.cluster, "warn_if_cpus_taken", check)
    with pytest.raises(Stop):
        run(settings_for(tmp_path, task_file[0], cpus_per_worker=1.5), progress=False)
    assert asked == [(1.5, "teacher.cpus_per_worker", "the teacher workers")]


def test_missing_tasks_file_says_what_to_run(tmp_path, capsys):
    with pytest.raises(TasksMissing, match="trajforge synth-rules") as caught:
        run(settings_for(tmp_path, tmp_path / "none.jsonl"), progress=False)
    assert isinstance(caught.value, TrajforgeError) and isinstance(caught.value, FileNotFoundError)
    assert main(["teacher", "--set", f"teacher.tasks={tmp_path / 'none.jsonl'}", "--set", f"teacher.lake={tmp_path / 'lake'}"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("trajforge teacher: no tasks at") and "run `trajforge synth-rules --lake LAKE` first" in error


def test_tasks_follow_the_lake_unless_set(tmp_path, capsys):
    lake = tmp_path / "elsewhere"
    assert load_teacher_settings(assignments=[("teacher.lake", str(lake))]).tasks_file == lake / "raw" / "tasks" / "synth_rules" / "tasks.jsonl"
    assert settings_for(tmp_path, tmp_path / "mine.jsonl").tasks_file == tmp_path / "mine.jsonl"
    # `trajforge synth-rules --lake X` writes where `trajforge teacher --lake X` reads
    from pipelines.synth_rules import tasks_file

    assert tasks_file(lake) == load_teacher_settings(assignments=[("teacher.lake", str(lake))]).tasks_file
    assert main(["teacher", "--lake", str(lake)]) == 2
    error = capsys.readouterr().err
    assert f"no tasks at {tasks_file(lake)}" in error and f"run `trajforge synth-rules --lake {lake}` first" in error


def test_the_shipped_config_teaches_every_task_so_its_report_can_show_200_verified_steps(tmp_path):
    from pipelines.teacher_srl import DEFAULT_CONFIG, load_tasks

    tasks = candidates()[:250]
    lake = tmp_path / "lake"
    path = lake / "raw" / "tasks" / "synth_rules" / "tasks.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text("".join(json.dumps(task) + "\n" for task in tasks))
    (tmp_path / "bare.yaml").write_text("teacher: {}\n")
    for settings in (load_teacher_settings(DEFAULT_CONFIG, [("teacher.lake", str(lake))]),
                     load_teacher_settings(tmp_path / "bare.yaml", [("teacher.lake", str(lake))])):  # the model's default too
        assert [task["task_id"] for task in load_tasks(settings)] == [task["task_id"] for task in tasks]


def test_a_bad_sandbox_setting_stops_the_teacher_before_it_starts(tmp_path, capsys):
    assert main(["teacher", "--lake", str(tmp_path / "lake"), "--set", "sandbox.wall_time_s=-1"]) == 2
    assert "sandbox.wall_time_s" in capsys.readouterr().err
    assert not (tmp_path / "lake").exists()


def test_oracle_precision_follows_the_mistake_rate(serve_url, tmp_path):
    tasks = [task for index, task in enumerate(candidates()) if index % 6 == 0][:90]
    path = tmp_path / "tasks.jsonl"
    path.write_text("\n".join(json.dumps(task) for task in tasks) + "\n")
    settings = settings_for(tmp_path, path, mistake_rate=0.3, max_steps=1, workers=2)
    run(settings, progress=False)
    first_steps = [r for r in teacher_records(settings) if r["step"] == 1]
    precision = sum(bool(r["reward"]["matches_gold"]) for r in first_steps) / len(first_steps)
    assert len(first_steps) == len(tasks)
    assert abs(precision - 0.7) < 0.15, precision
    [row] = [line.split(" | ") for line in (tmp_path / "reports" / "metrics.md").read_text().splitlines() if line.startswith("| oracle |")]
    assert abs(float(row[-1].rstrip(" |")) - 0.7) < 0.15  # the report's precision: a wrong rewrite that applies is no correct step
    wrong = [r for r in first_steps if r["reward"]["verified"] and r["reward"]["matches_gold"] is False]
    assert wrong  # such steps are verified (applied cleanly) and differ from gold: three rewards, each on its own


def test_a_job_killed_halfway_and_resubmitted_finishes_without_duplicates(serve_url, tmp_path):
    import subprocess
    import sys
    import time
    from pathlib import Path

    tasks = [task for index, task in enumerate(candidates()) if index % 4 == 0][:120]
    path = tmp_path / "tasks.jsonl"
    path.write_text("\n".join(json.dumps(task) for task in tasks) + "\n")
    settings = settings_for(tmp_path, path, mistake_rate=0.5)
    command = [sys.executable, "-m", "pipelines.teacher_srl", "--set", f"teacher.lake={settings.lake}", "--set", f"teacher.tasks={path}",
               "--set", f"teacher.reports={settings.reports}", "--set", "teacher.sample=0", "--set", "teacher.workers=1"]
    repo = Path(__file__).resolve().parents[2]
    job = subprocess.Popen(command, cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while len({r["task_id"] for r in teacher_records(settings)}) < 10 and time.monotonic() < deadline and job.poll() is None:
        time.sleep(0.2)
    # the driver and the local Ray cluster it started (raylet, GCS, workers: all in the job's session), mid-run
    subprocess.run(["pkill", "-9", "-s", str(job.pid)], check=False)
    job.wait()
    done_before = {r["task_id"] for r in teacher_records(settings)}
    assert 0 < len(done_before) < len(tasks)
    rerun = subprocess.run(command, cwd=repo, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    records = teacher_records(settings)
    finals = [r["task_id"] for r in records if r["final"]]
    assert sorted(finals) == sorted(t["task_id"] for t in tasks)  # every task finished exactly once
    steps = [(r["task_id"], r["step"]) for r in records]
    assert len(steps) == len(set(steps))  # no step recorded twice
    assert json.loads(rerun.stdout[: rerun.stdout.index("}") + 1])["skipped_finished"] >= len(done_before)


def test_an_unreachable_teacher_fails_the_job_and_its_tasks_are_retried_not_finished(serve_url, tmp_path, task_file, capsys):
    path, tasks = task_file
    one = tmp_path / "one.jsonl"
    one.write_text(json.dumps(tasks[0]) + "\n")
    command = ["teacher", "--lake", str(tmp_path / "lake"), "--set", f"teacher.tasks={one}", "--set", f"teacher.reports={tmp_path / 'reports'}",
               "--set", "teacher.kind=openai", "--set", "teacher.model=glm-4.6", "--set", "teacher.base_url=http://127.0.0.1:9",
               "--set", "teacher.max_steps=1", "--set", "teacher.workers=1", "--set", "teacher.cpus_per_worker=0.05"]
    assert main(command) == 1
    captured = capsys.readouterr()
    assert "did not answer 1 tasks" in captured.err and json.loads(captured.out[: captured.out.index("}") + 1])["unanswered"] == 1
    settings = load_teacher_settings(assignments=[("teacher.lake", str(tmp_path / "lake")), ("teacher.kind", "openai"),
                                                  ("teacher.model", "glm-4.6"), ("teacher.base_url", "http://127.0.0.1:9")])
    recorded = teacher_records(settings, finished_only=False)
    assert len(recorded) == 1 and recorded[0]["final"] and recorded[0]["error"]  # the step is kept, as what happened
    assert teacher_records(settings) == []  # but the task is not finished
    report = (tmp_path / "reports" / "metrics.md").read_text()
    assert "did not answer 1 tasks" in report and "malformed output" not in report
    assert main(command) == 1  # the next run retries it instead of skipping it
    assert json.loads(capsys.readouterr().out.split("\n}")[0] + "}")["skipped_finished"] == 0


@pytest.mark.timeout(120)
def test_a_hung_teacher_endpoint_fails_its_step_after_the_teachers_timeout_and_retries(serve_url, tmp_path, task_file, capsys):
    """An endpoint that takes the connection and never answers: teacher.timeout_s and max_retries bound the wait
    (the engine's defaults, 120 s and 4 retries, would hold the step for ten minutes)."""
    import socket
    import time

    path, tasks = task_file
    one = tmp_path / "one.jsonl"
    one.write_text(json.dumps(tasks[0]) + "\n")
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)  # connections complete in the kernel's backlog; no request is ever read
        started = time.monotonic()
        command = ["teacher", "--lake", str(tmp_path / "lake"), "--set", f"teacher.tasks={one}", "--set", f"teacher.reports={tmp_path / 'reports'}",
                   "--set", "teacher.kind=openai", "--set", "teacher.model=glm-4.6", "--set", f"teacher.base_url=http://127.0.0.1:{hung.getsockname()[1]}",
                   "--set", "teacher.max_steps=1", "--set", "teacher.workers=1", "--set", "teacher.cpus_per_worker=0.05",
                   "--set", "teacher.timeout_s=1", "--set", "teacher.max_retries=1", "--set", "teacher.backoff_s=0"]
        assert main(command) == 1
    assert time.monotonic() - started < 60
    captured = capsys.readouterr()
    assert json.loads(captured.out[: captured.out.index("}") + 1])["unanswered"] == 1


def test_the_report_gives_precision_per_step(serve_url, tmp_path, task_file):
    path, tasks = task_file
    settings = settings_for(tmp_path, path, mistake_rate=1.0, max_steps=2)
    run(settings, progress=False)
    report = (tmp_path / "reports" / "metrics.md").read_text()
    header = "| language | tasks | verified | verified/total | matches gold | steps | verified steps | correct steps | precision |"
    assert header in report and "| oracle | 10 |" in report
    rows = [line.split(" | ") for line in report.splitlines() if line.startswith("| python |")]
    steps, verified_steps, good_steps, precision = int(rows[0][5]), int(rows[0][6]), int(rows[0][7]), float(rows[0][8].rstrip(" |"))
    assert steps >= int(rows[0][1]) and good_steps <= verified_steps and abs(precision - good_steps / steps) < 0.01


@pytest.mark.parametrize("assignment,message", [
    (("teacher.kind", "openai"), "teacher.base_url"),
    (("teacher.prompts", "no/such/prompts.yaml"), "teacher.prompts: no prompts file"),
])
def test_teacher_settings_that_cannot_work_fail_at_load_naming_the_field(assignment, message):
    with pytest.raises(TrajforgeError, match=message):
        load_teacher_settings(assignments=[assignment])


def test_a_prompts_file_the_loop_cannot_fill_is_refused_before_any_worker_starts(tmp_path, capsys):
    prompts = tmp_path / "prompts.yaml"
    prompts.write_text("system: hi\nuser: '{state} {task}'\nfeedback: '{verdict}'\n")
    assert main(["teacher", "--lake", str(tmp_path / "lake"), "--set", f"teacher.prompts={prompts}"]) == 2
    err = capsys.readouterr().err
    assert f"teacher.prompts: prompt file {prompts}: user uses {{task}}" in err and "Traceback" not in err
    assert not (tmp_path / "lake" / "raw" / "trajectories").exists()


def test_null_prompts_are_the_teachers_not_the_students(tmp_path):
    prompts = load_teacher_settings(assignments=[("teacher.prompts", None)]).prompts
    assert prompts.is_absolute() and prompts.name == "teacher_prompts.yaml"


def test_the_shipped_prompts_are_found_from_any_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    prompts = load_teacher_settings().prompts
    assert prompts.is_absolute() and prompts.is_file() and prompts.name == "teacher_prompts.yaml"


def test_a_bad_line_in_the_tasks_file_is_named(tmp_path, capsys):
    bad = tmp_path / "tasks.jsonl"
    bad.write_text('{"task_id": "a", "language": "python", "instruction": "rename x", "pre": "x = 1\\n"}\n{"task_id": "b"\n')
    assert main(["teacher", "--lake", str(tmp_path / "lake"), "--set", f"teacher.tasks={bad}"]) == 2
    assert f"{bad} line 2 is not JSON" in capsys.readouterr().err


def test_a_kill_while_the_report_is_written_keeps_the_previous_report(tmp_path, task_file, monkeypatch):
    import pathlib

    from pipelines.teacher_srl import write_report

    settings = settings_for(tmp_path, task_file[0])
    previous = write_report(settings, task_file[1], [], 1.0).read_text()

    def killed(self, data, *args, **kwargs):  # the process dies halfway through the write
        with self.open("wb") as handle:
            handle.write((data if isinstance(data, bytes) else data.encode())[: len(data) // 2])
        raise KeyboardInterrupt

    for name in ("write_text", "write_bytes"):
        monkeypatch.setattr(pathlib.Path, name, killed)
    with pytest.raises(KeyboardInterrupt):
        write_report(settings, task_file[1], [], 2.0)
    monkeypatch.undo()
    assert (tmp_path / "reports" / "metrics.md").read_text() == previous


def test_with_several_steps_every_step_the_oracle_answers_without_a_mistake_is_correct(serve_url, tmp_path):
    from types import SimpleNamespace

    from pipelines.teacher_worker import oracle_answer
    from trajforge.trajectories import good_step

    tasks = {task["task_id"]: task for task in [task for index, task in enumerate(candidates()) if index % 10 == 0][:50]}
    path = tmp_path / "tasks.jsonl"
    path.write_text("\n".join(json.dumps(task) for task in tasks.values()) + "\n")
    settings = settings_for(tmp_path, path, mistake_rate=0.5, max_steps=3, workers=2)
    run(settings, progress=False)
    records = teacher_records(settings)
    assert {r["task_id"] for r in records if r["final"]} == set(tasks)
    changed_and_wrong = [(r["task_id"], r["step"]) for r in records if not r["final"] and r["reward"]["verified"] and r["reward"]["matches_gold"] is False]
    assert not changed_and_wrong  # a step after such a one replays the gold action on code it no longer turns into `post`
    for record in records:  # a wrong rewrite on an early step left code the gold action, replayed, could not fix
        mistake = oracle_answer(SimpleNamespace(**tasks[record["task_id"]]), record["step"], 0.5, 0, last=record["step"] == 3)[2]
        assert good_step(record) == (mistake is None), (record["task_id"], record["step"], mistake, record["reward"])
    [row] = [line.split(" | ") for line in (tmp_path / "reports" / "metrics.md").read_text().splitlines() if line.startswith("| oracle |")]
    assert abs(float(row[-1].rstrip(" |")) - 0.5) < 0.15  # the report's per-step precision: about 1 - the mistake rate


def processed_lake(lake):
    """Processed records (python and java) whose oracle action comes from `post`: the tasks' `pre` files parse."""
    from processed_datasets import record, write_processed

    python = [record("commitpackft", f"Return {i + 1}.", f"import os\n\n\ndef f():\n    return {i}\n", f"import os\n\n\ndef f():\n    return {i + 1}\n")
              for i in range(3)]
    java = [record("oce_dataft", "Rename x to y.", "class A {\n  int x = 1;\n}\n", "class A {\n  int y = 1;\n}\n", language="java")]
    write_processed(lake, {"python/train.jsonl": python, "java/train.jsonl": java})
    return python + java


def test_processed_records_are_taught_beside_synthetic_tasks_their_gold_is_post_and_the_report_has_sources(serve_url, tmp_path):
    """A processed dataset record has no gold action: the oracle's comes from its `post`, and matches_gold compares the
    code with `post`; the report's precision is broken down by source as well as by language."""
    records_ = processed_lake(tmp_path / "lake")
    synth = tmp_path / "synth.jsonl"
    synth.write_text("".join(json.dumps(task) + "\n" for task in candidates()[:2]))
    sources = [{"path": str(synth), "name": "synth"}, {"source": "processed", "splits": ["train"]}]
    settings = settings_for(tmp_path, synth, tasks=sources, mistake_rate=0.0, max_steps=1)
    assert run(settings, progress=False)["verified"] == 6
    recorded = {r["task_id"]: r for r in teacher_records(settings)}
    assert all(recorded[task["task_id"]]["reward"] == {"verified": True, "matches_gold": True, "tests_pass": None} for task in records_)
    report = (tmp_path / "reports" / "metrics.md").read_text()
    assert "| language | tasks |" in report and "| java | 1 | 1 | 1.00 | 1 | 1 | 1 | 1 | 1.00 |" in report
    assert "| processed:train | 4 | 4 | 1.00 | 4 | 4 | 4 | 4 | 1.00 |" in report and "| synth | 2 | 2 | 1.00 | 2 | 2 | 2 | 2 | 1.00 |" in report
    # every step a mistake: none gives the record's post, and a wrong rewrite applies (verified) yet differs from it
    records_ = processed_lake(tmp_path / "wrong" / "lake")
    wrong = settings_for(tmp_path / "wrong", synth, tasks=sources[1:], mistake_rate=1.0, max_steps=1, seed=2)  # a wrong rewrite among them
    run(wrong, progress=False)
    rewards = [r["reward"] for r in teacher_records(wrong)]
    assert len(rewards) == 4 and not any(reward["matches_gold"] for reward in rewards)
    assert any(reward["verified"] and reward["matches_gold"] is False for reward in rewards)
    assert "| processed:train | 4 |" in (tmp_path / "wrong" / "reports" / "metrics.md").read_text()


def test_a_lake_that_is_a_file_is_refused_before_any_worker_starts(tmp_path, capsys):
    """It was a NotADirectoryError in the teacher workers' start, with Ray's traceback of the actor above it."""
    a_file, tasks = tmp_path / "lake", tmp_path / "tasks.jsonl"
    a_file.write_text("not a lake\n")
    tasks.write_text(json.dumps({"task_id": "t", "instruction": "x", "language": "python", "pre": "print(1)\n"}) + "\n")
    assert main(["teacher", "--lake", str(a_file), "--set", f"teacher.tasks={tasks}"]) == 2
    err = capsys.readouterr().err
    assert f"teacher.lake (--lake): {a_file} is not a folder; give the lake the trajectories go to (nothing was written)" in err, err
    assert "Traceback" not in err and a_file.read_text() == "not a lake\n"


def test_ctrl_c_says_how_many_tasks_are_kept_and_that_the_same_command_goes_on(serve_url, tmp_path, task_file, capsys, monkeypatch):
    import pipelines.teacher_srl as teacher_srl

    path, tasks = task_file
    first = tmp_path / "first.jsonl"
    first.write_text("\n".join(json.dumps(task) for task in tasks[:3]) + "\n")
    run(settings_for(tmp_path, first, mistake_rate=0.0), progress=False)  # 3 of the 10 finished, then Ctrl-C in the next job

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(teacher_srl, "run", interrupted)
    status = main(["teacher", "--lake", str(tmp_path / "lake"), "--set", f"teacher.tasks={path}", "--set", "teacher.sample=0",
                   "--set", f"teacher.reports={tmp_path / 'reports'}"])
    assert status == 130
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("trajforge teacher: interrupted; 3 of 10 tasks are finished")
    assert str(tmp_path / "lake" / "raw" / "trajectories") in line and "the same command goes on with the others" in line
