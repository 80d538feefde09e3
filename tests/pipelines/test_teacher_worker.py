"""Teacher workers answer the supervisor's health checks as GenerationActors do, on the session's Ray."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from helpers import actor_repr_names

from pipelines.synth_templates import candidates
from pipelines.teacher_srl import load_teacher_settings

# GenerationActor.health()'s keys (actors/actor.py), which the supervisor and its reports read
HEALTH_KEYS = {"ok", "kind", "index", "pid", "engine", "model", "uptime_s", "requests", "errors", "generated_tokens", "stuck_s",
               "parse_failures", "sandbox_failures"}


def teacher_settings(tmp_path, **overrides):
    assignments = [("teacher.lake", str(tmp_path / "lake")), ("teacher.reports", str(tmp_path / "reports")), ("teacher.workers", 1),
                   ("teacher.cpus_per_worker", 0.05), ("teacher.max_steps", 1), ("teacher.mistake_rate", 0.0)]
    return load_teacher_settings(assignments=assignments + [(f"teacher.{key}", value) for key, value in overrides.items()])


def one_round(worker) -> dict:
    """The supervisor's first report on `worker`."""
    from actors.supervisor import supervise

    reports, stop = [], threading.Event()
    supervise([worker], interval_s=0.1, timeout_s=30, stop=stop, on_report=lambda report: (reports.append(report), stop.set()))
    return reports[0][0]


def test_an_oracle_worker_reports_its_health_to_the_supervisor(serve_url, tmp_path):
    import ray

    from actors.actor import CONTROL_GROUP
    from pipelines.teacher_worker import start_teacher_workers

    (worker,) = start_teacher_workers(teacher_settings(tmp_path), "run-health")
    try:
        ready = ray.get(worker.ready.options(concurrency_group=CONTROL_GROUP).remote(), timeout=120)
        assert set(ready) == HEALTH_KEYS | {"prompt_tokens", "completion_tokens"}
        assert (ready["ok"], ready["kind"], ready["engine"], ready["model"], ready["requests"], ready["stuck_s"]) == \
            (True, "teacher worker", "oracle", "oracle", 0, 0.0)
        assert actor_repr_names([worker]) == ["TeacherWorker(index=0)"]  # the Ray dashboard's Repr column and its log lines' prefix
        summary = ray.get(worker.run_task.remote(candidates()[0]), timeout=120)
        report = one_round(worker)
        assert summary["verified"] and (report["healthy"], report["status"]) == (True, "ok")
        assert report["health"]["requests"] == 2 * summary["steps"] and report["health"]["pid"] == ready["pid"]
    finally:
        ray.kill(worker, no_restart=True)


class TricklingServer:
    """An HTTP endpoint that sends one byte of its answer's headers every 0.1 s: never silent long enough for a read
    timeout, and never done with its headers (the engine bounds a dripped body by its timeout, not headers)."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.stopped = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                connection, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._trickle, args=(connection,), daemon=True).start()

    def _trickle(self, connection: socket.socket) -> None:
        with connection:
            connection.recv(65536)
            try:
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Trickle: ")
                while not self.stopped.wait(0.1):
                    connection.sendall(b"x")
            except OSError:
                return

    def close(self) -> None:
        self.stopped.set()
        self.sock.close()


@pytest.fixture
def trickling_endpoint():
    server = TricklingServer()
    yield server
    server.close()


def test_a_worker_whose_teacher_call_outlives_its_timeouts_says_it_is_stuck_while_busy(serve_url, tmp_path, trickling_endpoint):
    import ray

    from actors.actor import CONTROL_GROUP
    from pipelines.teacher_worker import start_teacher_workers

    settings = teacher_settings(tmp_path, kind="openai", model="teacher", base_url=trickling_endpoint.url, timeout_s=0.5, max_retries=0,
                                backoff_s=0.0)
    (worker,) = start_teacher_workers(settings, "run-stuck")
    try:
        ray.get(worker.ready.options(concurrency_group=CONTROL_GROUP).remote(), timeout=120)
        tasks = [worker.run_task.remote(task) for task in candidates()[:2]]  # both task slots held by calls that never end
        deadline, health = time.monotonic() + 60, {}
        while time.monotonic() < deadline and health.get("stuck_s", 0) < 0.5:
            health = ray.get(worker.health.options(concurrency_group=CONTROL_GROUP).remote(), timeout=30)
            time.sleep(0.2)
        assert health["ok"] is False and health["stuck_s"] >= 0.5 and health["engine"] == "openai" and health["model"] == "teacher"
        assert ray.wait(tasks, timeout=0)[0] == []
        trickling_endpoint.close()  # the calls fail, their tasks end: none is left for Ray to retry when the worker goes
        assert all(summary["errors"] for summary in ray.get(tasks, timeout=60))
        assert ray.get(worker.health.options(concurrency_group=CONTROL_GROUP).remote(), timeout=30)["ok"] is True
    finally:
        ray.kill(worker, no_restart=True)


def test_workers_are_started_before_they_are_returned_and_one_that_cannot_start_says_why(serve_url, tmp_path):
    """The supervisor polls from the first moment: a worker handed over still starting would be taken for a hung one."""
    from pipelines.teacher_worker import TeacherStartError, start_teacher_workers
    from trajforge.errors import TrajforgeError

    settings = teacher_settings(tmp_path).model_copy(update={"prompts": tmp_path / "no-such-prompts.yaml"})
    with pytest.raises(TeacherStartError, match="no-such-prompts.yaml") as raised:
        start_teacher_workers(settings, "run-broken")
    assert isinstance(raised.value, TrajforgeError) and raised.value.args[0].startswith("a teacher worker did not start: ")


def test_a_worker_restarted_mid_task_keeps_each_run_apart_and_the_report_counts_each_step_once(serve_url, tmp_path):
    """Ray re-runs the tasks of a worker killed mid-task: the dead run's steps keep their own run_id, unfinished, so the
    records of the run that finished a task (what the report counts) have each step once."""
    import ray

    from actors.run import run_loop
    from pipelines.teacher_srl import teacher_records, write_report
    from pipelines.teacher_worker import start_teacher_workers

    settings = teacher_settings(tmp_path, max_steps=3, mistake_rate=1.0)  # every step a mistake: every task takes three
    tasks = candidates()[:6]
    (worker,) = start_teacher_workers(settings, "job-restart")
    summaries: list = []
    try:
        runner = threading.Thread(target=lambda: summaries.extend(run_loop([worker], tasks, task_timeout_s=120, health_interval_s=None,
                                                                           concurrency_per_actor=2)))
        runner.start()
        deadline = time.monotonic() + 60
        while not any(not r["final"] for r in teacher_records(settings, finished_only=False)) and time.monotonic() < deadline:
            time.sleep(0.01)
        ray.kill(worker, no_restart=False)  # as a crash would, with a task between its steps: Ray restarts it and re-runs it
        runner.join(timeout=240)
        assert not runner.is_alive()
    finally:
        ray.kill(worker, no_restart=True)
    assert [s["steps"] for s in summaries] == [3] * len(tasks)
    recorded = teacher_records(settings, finished_only=False)
    runs: dict[tuple, list] = {}
    for record in recorded:
        runs.setdefault((record["task_id"], record["run_id"]), []).append(record)
    interrupted = [steps for steps in runs.values() if not any(r["final"] for r in steps)]
    assert interrupted and all(r["job_id"] == "job-restart" for r in recorded)  # the kill landed mid-task
    counted = teacher_records(settings)
    assert sorted((r["task_id"], r["step"]) for r in counted) == sorted((t["task_id"], step) for t in tasks for step in (1, 2, 3))
    report = write_report(settings, tasks, [], 1.0).read_text()
    [row] = [line.split(" | ") for line in report.splitlines() if line.startswith("| oracle |")]
    assert (int(row[1]), int(row[3])) == (len(tasks), 3 * len(tasks))  # tasks, steps: the interrupted runs' steps not among them
    assert f"- interrupted runs: {len(interrupted)} ({sum(map(len, interrupted))} steps;" in report


def test_a_workers_jails_end_a_run_a_grace_past_the_teachers_sandbox_timeout(tmp_path):
    """The generation actors' cap (`loop_jail_settings`) from `teacher.sandbox_timeout_s`: a hung run frees its jail once
    the loop has given up on it, and by default the loop waits as long as the sandbox's own wall time (not the actors' 90 s)."""
    from actors.loop import JAIL_GRACE_S
    from pipelines.teacher_worker import TeacherWorker
    from sandbox.settings import SandboxSettings, load_sandbox_settings

    def worker(wall_time_s: float, **overrides) -> TeacherWorker:
        sandbox = load_sandbox_settings(assignments=[("sandbox.wall_time_s", wall_time_s), ("sandbox.logs_dir", str(tmp_path / "logs"))])
        return TeacherWorker(teacher_settings(tmp_path, **overrides), 0, "job-jails", sandbox)

    default = worker(600)
    assert default.options.sandbox_timeout_s == SandboxSettings().wall_time_s == 30
    assert default.sandbox.sandbox.settings.wall_time_s == 30 + JAIL_GRACE_S
    short = worker(600, sandbox_timeout_s=5)
    assert short.options.sandbox_timeout_s == 5 and short.sandbox.sandbox.settings.wall_time_s == 5 + JAIL_GRACE_S
    assert worker(10, sandbox_timeout_s=5).sandbox.sandbox.settings.wall_time_s == 5 + JAIL_GRACE_S
    assert worker(3, sandbox_timeout_s=5).sandbox.sandbox.settings.wall_time_s == 3  # a shorter limit is kept


def test_the_supervisor_names_a_teacher_worker_as_its_health_said_and_one_never_heard_from_as_an_actor(serve_url, tmp_path, caplog):
    """Named from the `kind` of its latest health answer (not from Ray's private class descriptor): "actor 0" while it
    never answered, "teacher worker 0" from its restart's answer on, also once it hangs again."""
    import logging
    import os
    import signal

    import ray

    from actors.actor import CONTROL_GROUP
    from actors.supervisor import supervise
    from pipelines.teacher_worker import start_teacher_workers

    (worker,) = start_teacher_workers(teacher_settings(tmp_path), "job-supervised")
    reports, stop = [], threading.Event()

    def on_report(report: list[dict]) -> None:
        reports.append(report[0]["status"])
        if report[0]["status"] == "restarted" and reports.count("restarted") == 1:
            os.kill(report[0]["health"]["pid"], signal.SIGSTOP)  # the restarted worker hangs too, after it answered
        elif reports.count("restarted") == 2:
            stop.set()

    try:
        pid = ray.get(worker.health.options(concurrency_group=CONTROL_GROUP).remote(), timeout=60)["pid"]
        os.kill(pid, signal.SIGSTOP)  # alive but answering nothing, as a wedged process is, before the supervisor heard it
        timer = threading.Timer(180, stop.set)
        timer.start()
        with caplog.at_level(logging.INFO, logger="actors.supervisor"):
            supervise([worker], interval_s=0.2, timeout_s=1, stop=stop, on_report=on_report)
        timer.cancel()
    finally:
        ray.kill(worker, no_restart=True)
    assert reports[0] == "killed" and reports.count("killed") == 2 and reports[-1] == "restarted"
    unhealthy = [line for line in caplog.text.splitlines() if "is unhealthy" in line]
    assert len(unhealthy) == 2
    assert "actor 0 is unhealthy (it did not answer its health check in 1 s)" in unhealthy[0] and "teacher worker" not in unhealthy[0]
    assert "teacher worker 0 is unhealthy (it did not answer its health check in 1 s)" in unhealthy[1]
    assert caplog.text.count("teacher worker 0 restarted (pid ") == 2 and "generation actor" not in caplog.text


def test_the_oracle_makes_a_mistake_that_changes_the_code_only_at_a_runs_last_step():
    from types import SimpleNamespace

    from pipelines.teacher_worker import oracle_answer

    tasks = [SimpleNamespace(**task) for task in candidates()[:300]]
    earlier = [oracle_answer(task, 1, 0.5, 0, last=False)[2] for task in tasks]
    last = [oracle_answer(task, 1, 0.5, 0, last=True)[2] for task in tasks]
    # a wrong rewrite applies and changes the code: replayed after it, the gold action could not give `post`
    assert "wrong_rewrite" not in earlier and "wrong_rewrite" in last
    assert [mistake is None for mistake in earlier] == [mistake is None for mistake in last]  # the same steps err: the rate holds
    assert abs(sum(mistake is not None for mistake in earlier) / len(tasks) - 0.5) < 0.1


def test_the_oracle_answers_a_record_without_a_gold_action_with_a_rule_that_gives_its_post():
    from actors.loop import LoopTask
    from pipelines.teacher_worker import derived_gold_action, oracle_answer

    def task(pre, post, language="python", **extra):
        return LoopTask.model_validate({"task_id": "t", "instruction": "Edit it.", "language": language, "pre": pre, "post": post, **extra})

    assert derived_gold_action(task("\n\nx = 1\n", "\n\nx = 2\n")) == {"rule": {"kind": "module"}, "fix": "x = 2\n", "language": "python"}
    assert derived_gold_action(task("let a = 1;\n", "let b = 1;\n", "javascript"))["rule"] == {"kind": "program"}
    assert derived_gold_action(task("x = 1\n", "X = $A\n")) is None  # ast-grep would read $A as a metavariable
    assert derived_gold_action(task("\n\nx = 1\n", "x = 2\n")) is None  # the blank lines before the root are not the fix's
    synthetic = candidates()[0]
    assert derived_gold_action(LoopTask.model_validate(synthetic)) == synthetic["gold_action"]  # a synthetic task keeps its own
    action_part, _, mistake = oracle_answer(task("x = 1\n", "x = 2\n"), 1, 0.0, 0)
    assert mistake is None and '"fix": "x = 2\\n"' in action_part


@pytest.mark.parametrize("rate", [0.5, 0.25, 4.0])
def test_the_rate_limiter_grants_requests_at_its_rate_even_under_one_a_second(monkeypatch, rate):
    """teacher.requests_per_second is shared out over the workers: 1 over 2 workers is 0.5 each, which a bucket of one
    second's burst (half a token) never granted, so the teacher hung before its first request."""
    from pipelines import teacher_worker

    clock = {"now": 1000.0}
    monkeypatch.setattr(teacher_worker.time, "monotonic", lambda: clock["now"])

    def sleep(seconds):
        clock["now"] += seconds
        assert clock["now"] < 1100.0, "the limiter never granted the request"

    monkeypatch.setattr(teacher_worker.time, "sleep", sleep)
    limiter = teacher_worker.RateLimiter(rate)
    granted = []
    for _ in range(9):
        limiter.acquire()
        granted.append(clock["now"])
    burst = max(int(rate), 1)
    assert granted[0] == 1000.0  # the first request goes at once
    gaps = [later - earlier for earlier, later in zip(granted[burst - 1:], granted[burst:])]
    assert all(gap == pytest.approx(1 / rate) for gap in gaps)  # then one every 1/rate seconds
    assert granted[-1] - granted[0] == pytest.approx((9 - burst) / rate)


def test_an_openai_teachers_retries_wait_for_its_rate_limit_too(tmp_path, monkeypatch):
    """teacher.requests_per_second bounds what the endpoint gets: a 429 or 5xx answer's retry waits for the limiter as
    a first attempt does, not only for the engine's backoff (which sent three requests in 0.2 s at a limit of 1/s)."""
    import httpx

    from actors.engines.types import GenerationRequest
    from pipelines import teacher_worker

    clock = {"now": 1000.0}
    monkeypatch.setattr(teacher_worker.time, "monotonic", lambda: clock["now"])
    monkeypatch.setattr(teacher_worker.time, "sleep", lambda seconds: clock.__setitem__("now", clock["now"] + seconds))
    sent: list[float] = []

    def upstream(request: httpx.Request) -> httpx.Response:
        sent.append(clock["now"])
        if len(sent) in (1, 2, 4):
            return httpx.Response(429 if len(sent) < 4 else 502, json={"error": {"message": "busy"}})
        return httpx.Response(200, json={"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}],
                                         "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}})

    worker = teacher_worker.TeacherWorker(teacher_settings(tmp_path, kind="openai", model="m", base_url="http://upstream/v1",
                                                           requests_per_second=1.0, backoff_s=0.05), 0, "job-rate")
    worker.engine.client = httpx.Client(base_url=worker.engine.base_url, transport=httpx.MockTransport(upstream))
    for _ in range(2):
        [answer] = worker.timed_generate([GenerationRequest(messages=[{"role": "user", "content": "hi"}])])
        assert answer.text == "ok"
    assert len(sent) == 5
    assert all(later - earlier >= 1.0 - 1e-9 for earlier, later in zip(sent, sent[1:])), sent
