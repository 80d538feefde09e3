"""A sandbox call that hangs (a task whose tests sleep) fails its own task at the loop's sandbox timeout, with its
reason and the action it did apply recorded, while the batch's other tasks, queued for the same jail, finish. Real
Ray actor, real jails, the real `openai` engine against a scripted endpoint (tests/actors/scripted_teacher.py)."""

from __future__ import annotations

import time

from scripted_teacher import ScriptedTeacher

from actors.settings import load_actor_settings
from trajforge.trajectories import read_trajectories


def _task(task_id: str, tests: list[str]) -> dict:
    return {"task_id": task_id, "instruction": "Replace print calls with logging.info", "language": "python",
            "files": {"app.py": "import logging\n\ndef run():\n    print('step')\n"}, "tests": tests}


def test_a_hung_test_run_fails_its_task_alone_and_frees_the_jail_for_the_others(serve_url, tmp_path):
    import ray

    from actors.actor import start_actors
    from actors.run import run_loop

    teacher = ScriptedTeacher()
    # one jail for the whole batch, whose own wall-time limit (30 s) is far past the loop's sandbox timeout
    settings = load_actor_settings(assignments=[("actors.engine", "openai"), ("actors.model", "teacher"), ("actors.num_cpus", 0),
                                                ("actors.openai.base_url", teacher.url), ("actors.openai.api_key_env", None),
                                                ("actors.lake", str(tmp_path / "lake")), ("actors.sandbox_workers", 1),
                                                ("actors.loop.max_steps", 1), ("actors.loop.sandbox_timeout_s", 3)])
    tasks = [_task("sleeps", ["python", "-c", "import time; time.sleep(600)"])] + [_task(f"fine-{i}", ["python", "-c", "import app"]) for i in range(3)]
    (actor,) = start_actors(settings)
    try:
        started = time.monotonic()
        summaries = run_loop([actor], tasks, task_timeout_s=120, health_interval_s=None)
        took_s = time.monotonic() - started
    finally:
        ray.kill(actor, no_restart=True)
        teacher.close()
    assert [(s["task_id"], s["verified"], s["errors"]) for s in summaries[1:]] == [(f"fine-{i}", True, []) for i in range(3)]
    assert summaries[0]["errors"] == ["step 1: sandbox timed out after 3.0 s running the task's tests"]
    assert took_s < 25  # the hung run ended with the loop's timeout, not the jail's 30 s
    records = {r["task_id"]: r for r in read_trajectories(tmp_path / "lake" / "raw" / "trajectories")}
    hung = records["sleeps"]
    assert hung["final"] and hung["error"] == "sandbox timed out after 3.0 s running the task's tests"
    # the action did apply: its result (and diff) is kept, the tests did not pass, the task is not solved
    assert hung["sandbox_result"]["action"]["valid"] and "+    logging.info('step')" in hung["sandbox_result"]["action"]["diff"]
    assert hung["sandbox_result"]["tests"] is None and hung["reward"] == {"verified": True, "matches_gold": None, "tests_pass": False}
    assert all(records[f"fine-{i}"]["reward"]["tests_pass"] for i in range(3))
