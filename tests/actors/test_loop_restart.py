"""A generation actor killed in the middle of a loop batch: Ray restarts it (`max_restarts`) and re-runs the tasks it
had in flight (`max_task_retries`); every task finishes, none is lost, and each has one final step record. Real Ray
actor, the real `openai` engine against a scripted endpoint (tests/actors/scripted_teacher.py)."""

from __future__ import annotations

import threading
import time
from collections import Counter

from scripted_teacher import ScriptedTeacher

from actors.settings import load_actor_settings
from trajforge.trajectories import read_trajectories


def _task(task_id: str, instruction: str = "Replace print calls with logging.info") -> dict:
    return {"task_id": task_id, "instruction": instruction, "language": "python",
            "files": {"app.py": "import logging\n\ndef run():\n    print('step')\n"}}


def test_an_actor_killed_mid_batch_is_restarted_and_every_task_finishes_once(serve_url, tmp_path):
    import ray

    from actors.actor import CONTROL_GROUP, start_actors
    from actors.run import run_loop

    teacher = ScriptedTeacher(delay_s=0.3)  # each step takes a while, so the kill lands mid-task
    settings = load_actor_settings(assignments=[("actors.engine", "openai"), ("actors.model", "teacher"), ("actors.num_cpus", 0),
                                                ("actors.openai.base_url", teacher.url), ("actors.openai.api_key_env", None),
                                                ("actors.lake", str(tmp_path / "lake")), ("actors.sandbox_workers", 1),
                                                ("actors.loop.max_steps", 3)])
    # two tasks solved at their first step, three whose answers are cut short at every step (three steps each)
    tasks = [_task(f"solved-{i}") for i in range(2)] + [_task(f"long-{i}", "CUT-SHORT: replace print calls") for i in range(3)]
    (actor,) = start_actors(settings)
    summaries: list = []
    try:
        first_pid = ray.get(actor.health.options(concurrency_group=CONTROL_GROUP).remote(), timeout=60)["pid"]
        runner = threading.Thread(target=lambda: summaries.extend(run_loop([actor], tasks, task_timeout_s=120, health_interval_s=None)))
        runner.start()
        trajectories = tmp_path / "lake" / "raw" / "trajectories"
        deadline = time.monotonic() + 60
        while not list(read_trajectories(trajectories)) and time.monotonic() < deadline:
            time.sleep(0.05)
        written_before_kill = list(read_trajectories(trajectories))
        ray.kill(actor, no_restart=False)  # as a crash would: Ray restarts it
        runner.join(timeout=240)
        assert not runner.is_alive()
        restarted_pid = ray.get(actor.health.options(concurrency_group=CONTROL_GROUP).remote(), timeout=60)["pid"]
    finally:
        ray.kill(actor, no_restart=True)
        teacher.close()
    assert written_before_kill and restarted_pid != first_pid
    assert not all(r["final"] for r in written_before_kill) or len(written_before_kill) < len(tasks)  # killed mid-batch
    assert [(s["task_id"], s["steps"], s["errors"] == [] or s["task_id"].startswith("long")) for s in summaries] == \
        [(t["task_id"], 1 if t["task_id"].startswith("solved") else 3, True) for t in tasks]
    assert [s["verified"] for s in summaries] == [True, True, False, False, False]
    records = list(read_trajectories(tmp_path / "lake" / "raw" / "trajectories"))
    finals = Counter(r["task_id"] for r in records if r["final"])
    assert finals == Counter(t["task_id"] for t in tasks)  # every task has one final record: none lost, none twice
    # each run of a task (an attempt) has its own run_id: the steps a killed attempt had written stay apart from the
    # re-run's, which has each of its steps once, so a build does not stitch the two into one trajectory
    runs: dict[str, list] = {}
    for record in records:
        runs.setdefault(record["run_id"], []).append(record)
    finished = {run_id: steps for run_id, steps in runs.items() if any(r["final"] for r in steps)}
    assert sorted(steps[0]["task_id"] for steps in finished.values()) == sorted(t["task_id"] for t in tasks)
    for steps in finished.values():
        assert [r["step"] for r in steps] == list(range(1, len(steps) + 1)) and [r["final"] for r in steps][-1]
        assert len({r["task_id"] for r in steps}) == 1
    assert all(not r["final"] for run_id, steps in runs.items() if run_id not in finished for r in steps)
