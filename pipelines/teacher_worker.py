"""A teacher worker (a Ray actor): runs the actor loop's steps with a teacher instead of a local model.

Teachers: `oracle` replays the task's gold action (a processed dataset record, which has none, gets one made from its
`post`: `derived_gold_action`), with a configurable rate of deliberate mistakes
(malformed JSON, a wrong language, a broken pattern, a wrong rewrite), and every record it produces
says `teacher: oracle`; `openai` asks an OpenAI-compatible endpoint (GLM-4.6, MiniMax, a vLLM server,
our own front) through the generation interface, under a shared request rate.
"""

from __future__ import annotations

import json
import os
import random
import re
import threading
import time
from typing import Any

from actors.engines.types import Completion
from trajforge.errors import TrajforgeError

STUCK_MARGIN = 2.0
"""A teacher call counts as stuck once it has run this many times as long as its timeouts and backoffs allow."""


class RateLimiter:
    """At most `rate` acquisitions per second (a token bucket of one second's burst, and at least one acquisition's:
    with a bucket smaller than one token, a rate under one a second, no acquisition would ever be granted)."""

    def __init__(self, rate: float):
        self.rate, self.capacity, self.last = rate, max(rate, 1.0), time.monotonic()
        self.tokens = self.capacity
        self._lock = threading.Lock()

    def acquire(self) -> None:
        while True:
            with self._lock:
                now = time.monotonic()
                self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
                self.last = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    return
                wait = (1 - self.tokens) / self.rate
            time.sleep(wait)


MISTAKES = ("malformed_json", "wrong_language", "broken_pattern", "wrong_rewrite")
CODE_CHANGING = ("wrong_rewrite",)
"""Mistakes whose action applies and changes the code: the gold action, replayed on the next step, no longer gives
`post` (its pattern matched the changed code, or nothing), so the oracle makes them only at a run's last step."""


METAVARIABLE = re.compile(r"\$[A-Z_$]")
"""What ast-grep would read as a metavariable in a fix (`$NAME`, `$$$ARGS`, `$_`): a fix holding one is refused."""


def derived_gold_action(task: Any) -> dict[str, Any] | None:
    """The task's gold action; for a task without one whose result is known (a processed dataset record: one file,
    `pre` -> `post`), an ast-grep rule that matches the root node of the file and fixes it to the text `post` has
    there, so that applying it gives `post` exactly. None where no such rule gives `post`: the file does not parse, the
    root does not start a line or `post` does not keep what lies outside it (leading blank lines), or the text would
    hold an ast-grep metavariable."""
    if task.gold_action or task.post is None or len(task.files) != 1:
        return task.gold_action
    (pre,) = task.files.values()
    try:
        from ast_grep_py import SgRoot

        root = SgRoot(pre, task.language).root()
    except Exception:  # a language ast-grep-py does not know
        return None
    span = root.range()
    prefix, suffix = pre[: span.start.index], pre[span.end.index :]
    post = task.post
    if span.start.column != 0 or len(post) < len(prefix) + len(suffix) or not (post.startswith(prefix) and post.endswith(suffix)):
        return None
    fix = post[len(prefix) : len(post) - len(suffix)]
    if METAVARIABLE.search(fix):
        return None
    return {"rule": {"kind": root.kind()}, "fix": fix, "language": task.language}


def oracle_answer(task: Any, step: int, mistake_rate: float, seed: int, last: bool = True) -> tuple[str, str, str | None]:
    """(action part, state part, the mistake made or None) for one step; `last`: no step follows it in this run. A step
    makes a mistake at `mistake_rate`, and every other step gives the gold result, so the per-step precision is
    about 1 - mistake_rate whatever `max_steps` is: a mistake that changes the code (`CODE_CHANGING`) is drawn only
    at the last step, as the oracle, which only replays the gold action, could not repair it on a later one."""
    rng = random.Random(f"{seed}:{task.task_id}:{step}")
    action = dict(derived_gold_action(task) or {})
    kinds = MISTAKES if last else tuple(kind for kind in MISTAKES if kind not in CODE_CHANGING)
    mistake = rng.choice(kinds) if rng.random() < mistake_rate else None
    if mistake == "wrong_language":
        action["language"] = "ruby"
    elif mistake == "broken_pattern":
        key = "pattern" if "pattern" in action else None
        if key:
            action[key] = action[key] + " +"
        else:
            action["rule"] = {"pattern": "$$$"}
    elif mistake == "wrong_rewrite":
        if "rewrite" in action:
            action["rewrite"] = action["rewrite"] + "  # TODO"
        else:
            action["fix"] = str(action.get("fix", "")) + "  # TODO"
    body = json.dumps(action)
    if mistake == "malformed_json":
        body = body[:-1]
    think = f"The task asks: {task.instruction} An ast-grep {'rule' if 'rule' in action else 'rewrite'} in {task.language} does it."
    state = {"goals": [task.instruction[:200]], "decisions": [f"step {step}: use {'a rule' if 'rule' in action else 'a pattern rewrite'}"],
             "history": f"step {step}: proposed an action", "next_focus": "check the sandbox result"}
    return f"<think>{think}</think><action>{body}", json.dumps(state), mistake


class TeacherWorker:
    def __init__(self, settings: Any, index: int, job_id: str | None = None, sandbox: Any = None):
        """`job_id`: the teacher job's, in every step record; `sandbox`: the SandboxSettings of this worker's jails (None:
        configs/sandbox.yaml, read here), their wall time cut to the loop's sandbox timeout and grace (`loop_jail_settings`)."""
        from actors.actor import loop_jail_settings
        from actors.loop import LoopOptions
        from actors.prompting import load_prompts
        from actors.state import StateStore
        from sandbox.pool import SandboxPool
        from trajforge.trajectories import TrajectoryWriter

        self.settings, self.index = settings, index
        self.teacher = settings.kind if settings.kind == "oracle" else settings.model
        self.job_id = job_id
        self.options = LoopOptions(max_steps=settings.max_steps, temperature=settings.temperature, seed=settings.seed,
                                   sandbox_timeout_s=settings.sandbox_timeout_s)
        self.sandbox = SandboxPool(workers=2, settings=loop_jail_settings(sandbox, self.options.sandbox_timeout_s))
        self.states = StateStore(settings.lake / "state" / "teacher_states.db")
        self.trajectories = TrajectoryWriter(settings.lake / "raw" / "trajectories", f"teacher{index}")
        self.templates = load_prompts(settings.prompts)
        self.counters: dict[str, int] = {"parse_failures": 0, "sandbox_failures": 0, "prompt_tokens": 0, "completion_tokens": 0}
        self.started_at = time.time()
        self.requests = self.errors = 0
        self._in_flight: dict[object, float] = {}  # teacher calls running now: since when (monotonic)
        self._in_flight_lock = threading.Lock()
        self.engine = None
        if settings.kind == "openai":
            from actors.engines.openai_engine import OpenAIEngine

            if not settings.base_url:
                raise ValueError("teacher.base_url is required with kind openai")
            self.limiter = RateLimiter(max(settings.requests_per_second / settings.workers, 0.01))
            # retries wait for the limiter too: teacher.requests_per_second bounds every request the endpoint gets
            self.engine = OpenAIEngine(settings.base_url, settings.model, api_key_env=settings.api_key_env, timeout_s=settings.timeout_s,
                                       max_retries=settings.max_retries, backoff_s=settings.backoff_s, before_retry=self.limiter.acquire)

    def count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    def timed_generate(self, requests):
        self.limiter.acquire()
        call = object()
        with self._in_flight_lock:
            self._in_flight[call] = time.monotonic()
        try:
            done = self.engine.generate(requests)
        finally:
            with self._in_flight_lock:
                del self._in_flight[call]
        for completion in done:
            self.counters["prompt_tokens"] += completion.prompt_tokens
            self.counters["completion_tokens"] += completion.completion_tokens
        self.requests += len(done)
        self.errors += sum(completion.finish_reason == "error" for completion in done)
        return done

    def ready(self) -> dict[str, Any]:
        """Returns once the constructor is done; the health dict (what the supervisor waits for after a restart)."""
        return self.health()

    def __repr__(self) -> str:
        """What Ray calls this actor in its dashboard (the Repr column) and before its log lines: one per index."""
        return f"TeacherWorker(index={self.index})"

    def health(self) -> dict[str, Any]:
        """GenerationActor.health's shape, for the supervisor (actors/supervisor.py) that `run_loop` starts: `ok` is False
        while a teacher call has outlived `call_budget_s` (`stuck_s`: by how long), and the supervisor then restarts
        the worker so that Ray re-runs its tasks. Call it in the `control` concurrency group (`start_teacher_workers`
        makes it) so that a worker busy with its tasks still answers."""
        stuck_s = self._stuck_seconds()
        return {"ok": stuck_s is None, "kind": "teacher worker", "index": self.index, "pid": os.getpid(),
                "engine": self.engine.name if self.engine else "oracle",
                "model": self.teacher, "uptime_s": round(time.time() - self.started_at, 1), "requests": self.requests,
                "errors": self.errors, "generated_tokens": self.counters["completion_tokens"], "stuck_s": round(stuck_s or 0.0, 1),
                **self.counters}

    def call_budget_s(self) -> float:
        """How long one teacher call may run before it counts as stuck: STUCK_MARGIN times what its attempts' timeouts
        and the backoffs between them add up to (an endpoint that sends a byte now and then never trips the timeout
        of a read), and the rate limiter's waits before its retries (each behind at most the worker's other task's call).
        It does not allow for an endpoint's `Retry-After` waits: a worker that honours ones longer than the margin is restarted."""
        attempts = self.settings.max_retries + 1
        backoffs = 1.5 * self.settings.backoff_s * (2 ** self.settings.max_retries - 1)  # the engine's jitter is up to 1.5x
        limiter_waits = self.settings.max_retries * 2 * self.settings.workers / self.settings.requests_per_second
        return STUCK_MARGIN * (attempts * self.settings.timeout_s + backoffs + limiter_waits)

    def _stuck_seconds(self) -> float | None:
        """How long the oldest teacher call has run past `call_budget_s`; None when none has."""
        with self._in_flight_lock:
            oldest = min(self._in_flight.values(), default=None)
        over = None if oldest is None else time.monotonic() - oldest - self.call_budget_s()
        return over if over is not None and over > 0 else None

    def propose(self, messages, options, seed, task) -> tuple[Completion, Completion | None]:
        if self.engine is not None:
            from actors.loop import generate_step

            return generate_step(self, messages, options, seed)
        step = seed - options.seed
        action_part, state_part, mistake = oracle_answer(task, step, self.settings.mistake_rate, self.settings.seed,
                                                        last=step >= options.max_steps)
        self.requests += 2
        return (Completion(text=action_part, model="oracle", engine="oracle", error=None),
                Completion(text=state_part, model="oracle", engine="oracle"))

    def run_task(self, task: dict[str, Any]) -> dict[str, Any]:
        """The actor loop for one task; each call is a run of its own (a new `run_id` in its step records, beside the
        job's `job_id`): when Ray re-runs the task on a restarted worker, the steps the dead one wrote stay an
        unfinished run apart from the re-run's (`teacher_records` and the report take the run that finished the task)."""
        import uuid

        from actors.loop import run_task

        return run_task(self, task, self.options, run_id=uuid.uuid4().hex[:12])

    def stats(self) -> dict[str, int]:
        return dict(self.counters)


class TeacherStartError(TrajforgeError, RuntimeError):
    """A teacher worker did not start (its constructor failed); the message is the worker's own reason."""


def start_teacher_workers(settings: Any, job_id: str, sandbox: Any = None) -> list:
    """The job's `settings.workers` TeacherWorker actors (`cpus_per_worker` each, two tasks at once), restarted by Ray
    with their tasks re-run, and with the `control` concurrency group where `ready` and `health` answer while both
    task slots are busy (as GenerationActors have it, so `run_loop`'s supervisor watches them the same way). Returns
    once each has started: the supervisor would take one still starting for one that does not answer."""
    import ray

    from actors.actor import CONTROL_GROUP, wait_started

    worker = ray.remote(concurrency_groups={CONTROL_GROUP: 1})(TeacherWorker).options(
        num_cpus=settings.cpus_per_worker, max_restarts=2, max_task_retries=2, max_concurrency=2)
    workers = [worker.remote(settings, index, job_id, sandbox) for index in range(settings.workers)]
    wait_started(workers, TeacherStartError, "a teacher worker")
    return workers
