"""`trajforge rollout` / `python -m actors.rollout`: the configured actors over a tasks file or a named Ray queue."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

import pytest

from scripted_teacher import ScriptedTeacher

from actors.rollout import main
from trajforge.trajectories import read_trajectories

TASKS = [{"task_id": f"rollout-{i}", "instruction": "Replace print calls with logging.info", "language": "python",
          "files": {"app.py": f"import logging\n\ndef run():\n    print('step', {i})\n"}} for i in range(3)]


def _options(teacher: ScriptedTeacher, lake) -> list[str]:
    return ["--lake", str(lake), "--set", "actors.engine=openai", "--set", "actors.model=teacher", "--set", "actors.num_cpus=0",
            "--set", f"actors.openai.base_url={teacher.url}", "--set", "actors.openai.api_key_env=null"]


def test_rollout_takes_tasks_from_a_named_ray_queue_and_from_a_file(serve_url, tmp_path, capsys):
    import ray

    from actors.task_queue import task_queue

    teacher, name = ScriptedTeacher(), f"test-{uuid.uuid4().hex[:8]}"
    queue = task_queue(name)
    try:
        queue.put_nowait_batch(TASKS)  # put before the rollout starts: they wait in the detached queue
        assert main(["--queue", name, "--idle-exit-s", "1", *_options(teacher, tmp_path / "lake")]) == 0
        assert queue.empty()
        from_queue = capsys.readouterr().out
        tasks_file = tmp_path / "tasks.jsonl"
        tasks_file.write_text("".join(json.dumps(task) + "\n" for task in TASKS))
        assert main(["--tasks", str(tasks_file), "--limit", "2", *_options(teacher, tmp_path / "lake")]) == 0
        from_file = capsys.readouterr().out
    finally:
        teacher.close()
        ray.kill(queue.actor)
    assert "3 of 3 tasks verified" in from_queue
    assert "python: 2 of 2 verified" in from_file and "rollout-2" not in from_file
    records = list(read_trajectories(tmp_path / "lake" / "raw" / "trajectories"))
    assert sorted(record["task_id"] for record in records) == ["rollout-0", "rollout-0", "rollout-1", "rollout-1", "rollout-2"]


def test_a_missing_tasks_file_says_what_to_run(tmp_path, capsys):
    assert main(["--lake", str(tmp_path / "empty")]) == 2
    assert "trajforge synth-rules" in capsys.readouterr().err


def test_an_engine_that_cannot_start_is_one_clear_line_not_a_ray_traceback(serve_url, tmp_path, capsys):
    tasks_file = tmp_path / "tasks.jsonl"
    tasks_file.write_text(json.dumps(TASKS[0]) + "\n")
    base = ["--tasks", str(tasks_file), "--lake", str(tmp_path / "lake"), "--set", "actors.num_cpus=0"]
    assert main([*base, "--set", f"actors.model={tmp_path / 'no-model'}"]) == 2
    err = capsys.readouterr().err
    assert f"FileNotFoundError: model directory {tmp_path / 'no-model'} not found" in err and "Traceback" not in err


@pytest.mark.parametrize(("lines", "problem"), [
    ([], "no tasks in"),
    (["", "  "], "no tasks in"),
    ([{"task_id": "a", "instruction": "x"}], "line 1 is not a task the actor loop can run: task: a task needs files or pre"),
    ([TASKS[0], {"task_id": "b", "pre": "x = 1\n"}], "line 2 is not a task the actor loop can run: instruction: Field required"),
    ([{**TASKS[0], "task_id": 5}], "line 1 is not a task the actor loop can run: task_id: Input should be a valid string"),
])
def test_a_tasks_file_the_loop_cannot_run_is_refused_before_any_actor_starts(tmp_path, capsys, monkeypatch, lines, problem):
    import actors.rollout

    monkeypatch.setattr(actors.rollout, "rollout", lambda *args, **kwargs: pytest.fail("the rollout started"))
    tasks_file = tmp_path / "tasks.jsonl"
    tasks_file.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    assert main(["--tasks", str(tasks_file), "--lake", str(tmp_path / "lake")]) == 2
    assert problem in capsys.readouterr().err


def test_a_tasks_file_of_binary_bytes_is_one_line_not_a_decode_traceback(tmp_path, capsys, monkeypatch):
    import actors.rollout

    monkeypatch.setattr(actors.rollout, "rollout", lambda *args, **kwargs: pytest.fail("the rollout started"))
    tasks_file = tmp_path / "tasks.jsonl"
    tasks_file.write_bytes(b'{"task_id": "a"}\n\x00\xff\xa1garbage\n')
    assert main(["--tasks", str(tasks_file), "--lake", str(tmp_path / "lake")]) == 2
    err = capsys.readouterr().err
    assert f"{tasks_file} is not UTF-8 text (byte 18): give a file of JSON lines" in err and "Traceback" not in err


def test_a_lake_that_is_a_file_is_refused_before_any_actor_starts(tmp_path, capsys, monkeypatch):
    """It was a NotADirectoryError in the generation actors' start, with Ray's traceback of the actor above it."""
    import actors.rollout

    monkeypatch.setattr(actors.rollout, "rollout", lambda *args, **kwargs: pytest.fail("the rollout started"))
    a_file, tasks_file = tmp_path / "lake", tmp_path / "tasks.jsonl"
    a_file.write_text("not a lake\n")
    tasks_file.write_text(json.dumps(TASKS[0]) + "\n")
    assert main(["--tasks", str(tasks_file), "--lake", str(a_file)]) == 2
    err = capsys.readouterr().err
    assert f"actors.lake (--lake): {a_file} is not a folder; give the lake the step records go to (nothing was written)" in err, err


def test_a_prompts_file_the_loop_cannot_fill_is_refused_before_any_actor_starts(tmp_path, capsys, monkeypatch):
    import actors.rollout

    monkeypatch.setattr(actors.rollout, "rollout", lambda *args, **kwargs: pytest.fail("the rollout started"))
    tasks_file, prompts = tmp_path / "tasks.jsonl", tmp_path / "prompts.yaml"
    tasks_file.write_text(json.dumps(TASKS[0]) + "\n")
    prompts.write_text("system: hi\nuser: '{state}'\n")
    assert main(["--tasks", str(tasks_file), "--lake", str(tmp_path / "lake"), "--set", f"actors.prompts={prompts}"]) == 2
    assert f"actors.prompts: prompt file {prompts} lacks ['feedback']" in capsys.readouterr().err


@pytest.mark.parametrize("limit", ["0", "-1", "two"])
def test_a_limit_below_one_is_refused_by_the_parser(tmp_path, capsys, monkeypatch, limit):
    import actors.rollout

    monkeypatch.setattr(actors.rollout, "rollout", lambda *args, **kwargs: pytest.fail("the rollout started"))
    tasks_file = tmp_path / "tasks.jsonl"
    tasks_file.write_text("".join(json.dumps(task) + "\n" for task in TASKS))
    with pytest.raises(SystemExit) as exit_status:
        main(["--tasks", str(tasks_file), "--limit", limit])
    assert exit_status.value.code == 2 and "--limit" in capsys.readouterr().err


@pytest.mark.parametrize(("flag", "value", "problem"), [
    ("--idle-exit-s", "-1", "-1 is not a number of seconds at least 0"),
    ("--idle-exit-s", "nan", "nan is not a number of seconds at least 0"),
    ("--lease-s", "0", "0 is not a number of seconds above 0"),  # every batch would go back to the queue while it runs
    ("--lease-s", "-5", "-5 is not a number of seconds above 0"),
    ("--lease-s", "soon", "'soon' is not a number of seconds"),
])
def test_queue_durations_out_of_range_are_refused_by_the_parser(tmp_path, capsys, monkeypatch, flag, value, problem):
    """A negative --idle-exit-s or a --lease-s of 0 or below was taken: the rollout started (and exited 0)."""
    import actors.rollout

    monkeypatch.setattr(actors.rollout, "rollout", lambda *args, **kwargs: pytest.fail("the rollout started"))
    with pytest.raises(SystemExit) as exit_status:
        main(["--queue", "q", "--lake", str(tmp_path / "lake"), flag, value])
    assert exit_status.value.code == 2 and f"argument {flag}: {problem}" in capsys.readouterr().err
    assert not (tmp_path / "lake").exists()


def test_limit_with_a_queue_is_refused_not_ignored(tmp_path, capsys, monkeypatch):
    import actors.rollout

    monkeypatch.setattr(actors.rollout, "rollout", lambda *args, **kwargs: pytest.fail("the rollout started"))
    assert main(["--queue", "somewhere", "--limit", "2", "--lake", str(tmp_path / "lake")]) == 2
    assert "--limit takes the first N tasks of a file" in capsys.readouterr().err


def test_an_engine_whose_extra_is_missing_is_refused_before_any_actor_starts(tmp_path, capsys, monkeypatch):
    import actors.rollout
    from actors.engines import factory

    monkeypatch.setattr(actors.rollout, "rollout", lambda *args, **kwargs: pytest.fail("the rollout started"))
    monkeypatch.setitem(factory.EXTRA_PACKAGES, "vllm", "vllm_absent_here")  # the same on a machine that has vLLM
    tasks_file = tmp_path / "tasks.jsonl"
    tasks_file.write_text(json.dumps(TASKS[0]) + "\n")
    assert main(["--tasks", str(tasks_file), "--lake", str(tmp_path / "lake"), "--set", "actors.engine=vllm", "--set", "actors.num_gpus=1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "engine vllm needs the gpu extra" in err and "pip install -e '.[gpu]'" in err
    assert "choose engine transformers or openai" in err


def test_a_driver_joining_a_cluster_only_warns_that_the_actors_nodes_need_the_extra(tmp_path, capsys, monkeypatch):
    import actors.rollout
    from actors.engines import factory

    started = []
    monkeypatch.setitem(factory.EXTRA_PACKAGES, "vllm", "vllm_absent_here")
    monkeypatch.setattr(actors.rollout, "rollout", lambda settings, *args, **kwargs: started.append(settings.engine) or [])
    monkeypatch.setattr("trajforge.cluster.ray_to_join", lambda address: "10.0.0.1:6379")  # a head node's cluster
    tasks_file = tmp_path / "tasks.jsonl"
    tasks_file.write_text(json.dumps(TASKS[0]) + "\n")
    assert main(["--tasks", str(tasks_file), "--lake", str(tmp_path / "lake"), "--set", "actors.engine=vllm", "--set", "actors.num_gpus=1", "--json"]) == 0
    err = capsys.readouterr().err
    assert started == ["vllm"]
    assert "WARNING" in err and "no vllm_absent_here package" in err and "every node they are placed on needs" in err


def test_the_engine_check_passes_engines_of_the_base_install_and_an_installed_extra(monkeypatch):
    from actors.engines import factory

    for engine in ("transformers", "openai"):
        factory.check_engine_installed(engine)
    monkeypatch.setitem(factory.EXTRA_PACKAGES, "vllm", "json")  # a package this Python has
    factory.check_engine_installed("vllm")


NO_CLUSTER = """
import sys
import ray._private.services as services

services._find_address_from_flag = lambda flag: set()  # no Ray process of this machine (other tests' Rays) is found
from trajforge.cli.main import main

sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("command", ["rollout", "queue"])
def test_a_queue_without_a_running_cluster_is_refused_at_once(tmp_path, command):
    ray_tmp = tempfile.mkdtemp(prefix="ray")  # short: a Ray started there needs its socket paths under 108 bytes
    env = {**{key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}, "RAY_TMPDIR": ray_tmp}  # no `ray start` recorded a cluster there
    started = time.monotonic()
    teacher = ScriptedTeacher()  # actors that would start, so the old rollout waited out --idle-exit-s and exited 0
    argv = ["rollout", "--queue", "nowhere", "--idle-exit-s", "1", *_options(teacher, tmp_path / "lake")] if command == "rollout" \
        else ["queue", "status", "nowhere"]
    try:
        done = subprocess.run([sys.executable, "-c", NO_CLUSTER, *argv], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    finally:
        teacher.close()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.splitlines()[-1].startswith(f"trajforge {command}: a task queue lives in a running Ray cluster, and none could be joined at 'auto'")
    assert "ray start --head" in done.stderr and "Traceback" not in done.stderr and time.monotonic() - started < 30


def test_vllm_actors_without_a_gpu_each_are_refused_naming_the_override(tmp_path, capsys):
    """Ray sets CUDA_VISIBLE_DEVICES only for reserved GPUs: vLLM actors with num_gpus 0 would all load onto GPU 0."""
    tasks_file = tmp_path / "tasks.jsonl"
    tasks_file.write_text(json.dumps(TASKS[0]) + "\n")
    assert main(["--tasks", str(tasks_file), "--lake", str(tmp_path / "lake"), "--set", "actors.engine=vllm"]) == 2
    err = capsys.readouterr().err
    assert "engine vllm needs a GPU per actor: set num_gpus 1" in err and "actors.engine (set by --set actors.engine)" in err
