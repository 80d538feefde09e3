"""`trajforge queue put|status|drop NAME`: the named task queue from the command line."""

from __future__ import annotations

import json
import uuid

from trajforge.cli.main import main

TASKS = [{"task_id": f"q{i}", "instruction": "Replace print calls with logging.info", "language": "python", "pre": "print(1)\n"}
         for i in range(3)]


def _status(capsys, name: str) -> dict:
    assert main(["queue", "status", name]) == 0
    return json.loads(capsys.readouterr().out)


def test_put_status_and_drop(serve_url, tmp_path, capsys):
    name = f"cli-{uuid.uuid4().hex[:8]}"
    tasks_file = tmp_path / "tasks.jsonl"
    tasks_file.write_text("".join(json.dumps(task) + "\n" for task in TASKS))
    assert main(["queue", "put", name, str(tasks_file)]) == 0
    assert "queued 3 tasks" in capsys.readouterr().out
    assert main(["queue", "put", name, str(tasks_file), "--address", "auto"]) == 0
    capsys.readouterr()
    assert _status(capsys, name) == {"queue": name, "ready": 6, "leased": 0}
    assert main(["queue", "drop", name]) == 0
    capsys.readouterr()
    assert main(["queue", "status", name]) == 2
    assert f"no task queue named {name!r}" in capsys.readouterr().err


def test_a_bad_line_queues_nothing_and_names_the_line(serve_url, tmp_path, capsys):
    name = f"cli-{uuid.uuid4().hex[:8]}"
    tasks_file = tmp_path / "tasks.jsonl"
    tasks_file.write_text(json.dumps(TASKS[0]) + "\n" + '{"instruction": "no id"}\n')
    assert main(["queue", "put", name, str(tasks_file)]) == 2
    assert "line 2 is not a task object with a task_id" in capsys.readouterr().err
    assert main(["queue", "status", name]) == 2  # the queue was not even made


def test_put_refuses_a_task_the_loop_cannot_run_and_a_missing_file_without_rollout_advice(serve_url, tmp_path, capsys):
    name = f"cli-{uuid.uuid4().hex[:8]}"
    tasks_file = tmp_path / "tasks.jsonl"
    tasks_file.write_text(json.dumps(TASKS[0]) + "\n" + json.dumps({"task_id": "q9", "instruction": "no code"}) + "\n")
    assert main(["queue", "put", name, str(tasks_file)]) == 2
    assert "line 2 is not a task the actor loop can run: task: a task needs files or pre" in capsys.readouterr().err
    assert main(["queue", "status", name]) == 2  # nothing queued, the queue not made
    capsys.readouterr()
    assert main(["queue", "put", name, str(tmp_path / "missing.jsonl")]) == 2
    err = capsys.readouterr().err
    assert f"no tasks at {tmp_path / 'missing.jsonl'}" in err and "--queue" not in err and "synth-rules" not in err
