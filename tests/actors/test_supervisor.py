"""The supervisor in the actor loop: an actor that stops answering, or whose engine is stuck on a generation that
timed out, is restarted by Ray and its tasks finish; the hung task fails alone. Real Ray actors, the real `openai`
engine against a scripted endpoint (tests/actors/scripted_teacher.py)."""

from __future__ import annotations

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
