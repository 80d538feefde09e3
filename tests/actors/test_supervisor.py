"""The supervisor in the actor loop: an actor that stops answering, or whose engine is stuck on a generation that
timed out, is restarted by Ray and its tasks finish; the hung task fails alone. Real Ray actors, the real `openai`
engine against a scripted endpoint (tests/actors/scripted_teacher.py)."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

import pytest
from scripted_teacher import ScriptedTeacher

from actors.settings import load_actor_settings

HANG = "HANG-FOREVER"


def _task(task_id: str, instruction: str = "Replace print calls with logging.info") -> dict:
    return {"task_id": task_id, "instruction": instruction, "language": "python",
            "files": {"app.py": "import logging\n\ndef run():\n    print('step')\n"}, "tests": ["python", "-c", "import app"]}


def _settings(url: str, tmp_path, generation_timeout_s: float):
    return load_actor_settings(assignments=[("actors.engine", "openai"), ("actors.model", "teacher"), ("actors.num_cpus", 0),
                                            ("actors.openai.base_url", url), ("actors.openai.api_key_env", None),
                                            ("actors.lake", str(tmp_path / "lake")), ("actors.sandbox_workers", 1),
                                            ("actors.generation_timeout_s", generation_timeout_s)])


@pytest.fixture
def teacher():
    server = ScriptedTeacher(hang_marker=HANG)
    yield server
    server.close()


def _pid(actor) -> int:
    import ray

    from actors.actor import CONTROL_GROUP

    return ray.get(actor.health.options(concurrency_group=CONTROL_GROUP).remote(), timeout=60)["pid"]


def test_health_is_not_ok_while_a_timed_out_generation_holds_the_engine(serve_url, teacher, tmp_path):
    import ray

    from actors.actor import start_actors

    (actor,) = start_actors(_settings(teacher.url, tmp_path, generation_timeout_s=1.0))
    try:
        hung = {"messages": [{"role": "user", "content": HANG}], "max_tokens": 4}
        (answer,) = ray.get(actor.generate.remote([hung]), timeout=60)
        assert answer["finish_reason"] == "error" and answer["timed_out"] and "timed out after 1.0 s" in answer["error"]
        health = ray.get(actor.health.remote(), timeout=10)
        assert not health["ok"]
        # a call queued behind the stuck one waits for a restart, and gives up when none comes within a timeout
        (queued,) = ray.get(actor.generate.remote([{"prompt": "def f(", "max_tokens": 4}]), timeout=60)
        assert queued["timed_out"] and "stuck" in queued["error"]
        teacher.release.set()  # the upstream answers at last: the engine thread is free again
        deadline = time.monotonic() + 60
        while not (health := ray.get(actor.health.remote(), timeout=10))["ok"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert health["ok"] and health["stuck_s"] == 0
        (after,) = ray.get(actor.generate.remote([{"prompt": "def f(", "max_tokens": 4}]), timeout=60)
        assert after["finish_reason"] != "error"
    finally:
        ray.kill(actor, no_restart=True)


def test_one_hung_task_fails_alone_and_the_supervisor_restarts_its_actor(serve_url, teacher, tmp_path, caplog):
    import ray

    from actors.actor import start_actors
    from actors.run import run_loop

    (actor,) = start_actors(_settings(teacher.url, tmp_path, generation_timeout_s=3.0))
    tasks = [_task("hung", f"{HANG}: replace print calls"), _task("fine-1"), _task("fine-2")]
    try:
        first_pid = _pid(actor)
        with caplog.at_level(logging.WARNING, logger="actors.supervisor"):
            summaries = run_loop([actor], tasks, task_timeout_s=120, health_interval_s=0.3, health_timeout_s=5)
        assert summaries[0]["task_id"] == "hung" and not summaries[0]["verified"] and summaries[0]["steps"] == 1
        assert "generation timed out after 3.0 s" in summaries[0]["errors"][0]
        assert [(s["task_id"], s["verified"]) for s in summaries[1:]] == [("fine-1", True), ("fine-2", True)]
        assert "engine has been stuck" in caplog.text
        assert _pid(actor) != first_pid
    finally:
        ray.kill(actor, no_restart=True)


def test_an_actor_that_stops_answering_is_restarted_and_its_tasks_finish(serve_url, tmp_path, caplog):
    import ray

    from actors.actor import start_actors
    from actors.run import run_loop

    teacher = ScriptedTeacher(delay_s=0.5)  # tasks stay in flight long enough to be caught mid-step
    (actor,) = start_actors(_settings(teacher.url, tmp_path, generation_timeout_s=30.0))
    summaries: list = []
    try:
        first_pid = _pid(actor)
        with caplog.at_level(logging.WARNING, logger="actors.supervisor"):
            runner = threading.Thread(target=lambda: summaries.extend(
                run_loop([actor], [_task(f"stopped-{i}") for i in range(3)], task_timeout_s=60, health_interval_s=0.3, health_timeout_s=2)))
            runner.start()
            deadline = time.monotonic() + 30
            while teacher.chats == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            os.kill(first_pid, signal.SIGSTOP)  # alive but answering nothing, as a wedged process is
            runner.join(timeout=180)
        assert not runner.is_alive()
        assert [(s["task_id"], s["verified"]) for s in summaries] == [(f"stopped-{i}", True) for i in range(3)]
        assert "did not answer its health check in 2 s" in caplog.text
        assert _pid(actor) != first_pid
    finally:
        ray.kill(actor, no_restart=True)
        teacher.close()
