"""A teacher worker (a Ray actor): runs the actor loop's steps with a teacher instead of a local model.

Teachers: `oracle` replays the task's gold action, with a configurable rate of deliberate mistakes
(malformed JSON, a wrong language, a broken pattern, a wrong rewrite), and every record it produces
says `teacher: oracle`; `openai` asks an OpenAI-compatible endpoint (GLM-4.6, MiniMax, a vLLM server,
our own front) through the generation interface, under a shared request rate.
"""

from __future__ import annotations

import json
import random
import threading
import time
from typing import Any

from actors.engines.types import Completion


class RateLimiter:
    """At most `rate` acquisitions per second (a token bucket of one second's burst)."""

    def __init__(self, rate: float):
        self.rate, self.tokens, self.last = rate, rate, time.monotonic()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        while True:
            with self._lock:
                now = time.monotonic()
                self.tokens = min(self.rate, self.tokens + (now - self.last) * self.rate)
                self.last = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    return
                wait = (1 - self.tokens) / self.rate
            time.sleep(wait)


MISTAKES = ("malformed_json", "wrong_language", "broken_pattern", "wrong_rewrite")


def oracle_answer(task: Any, step: int, mistake_rate: float, seed: int) -> tuple[str, str, str | None]:
    """(action part, state part, the mistake made or None) for one step."""
    rng = random.Random(f"{seed}:{task.task_id}:{step}")
    action = dict(task.gold_action or {})
    mistake = rng.choice(MISTAKES) if rng.random() < mistake_rate else None
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
    def __init__(self, settings: Any, index: int, run_id: str | None = None, sandbox: Any = None):
        """`sandbox`: the SandboxSettings of this worker's jails (None: configs/sandbox.yaml, read here)."""
        from actors.prompting import load_prompts
        from actors.state import StateStore
        from sandbox.pool import SandboxPool
        from trajforge.trajectories import TrajectoryWriter

        self.settings, self.index = settings, index
        self.teacher = settings.kind if settings.kind == "oracle" else settings.model
        self.run_id = run_id
        self.sandbox = SandboxPool(workers=2, settings=sandbox)
        self.states = StateStore(settings.lake / "state" / "teacher_states.db")
        self.trajectories = TrajectoryWriter(settings.lake / "raw" / "trajectories", f"teacher{index}")
        self.templates = load_prompts(settings.prompts)
        self.counters: dict[str, int] = {"parse_failures": 0, "sandbox_failures": 0, "prompt_tokens": 0, "completion_tokens": 0}
        self.engine = None
        if settings.kind == "openai":
            from actors.engines.openai_engine import OpenAIEngine

            if not settings.base_url:
                raise ValueError("teacher.base_url is required with kind openai")
            self.engine = OpenAIEngine(settings.base_url, settings.model, api_key_env=settings.api_key_env, timeout_s=settings.timeout_s,
                                       max_retries=settings.max_retries, backoff_s=settings.backoff_s)
            self.limiter = RateLimiter(max(settings.requests_per_second / settings.workers, 0.01))

    def count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    def timed_generate(self, requests):
        self.limiter.acquire()
        done = self.engine.generate(requests)
        for completion in done:
            self.counters["prompt_tokens"] += completion.prompt_tokens
            self.counters["completion_tokens"] += completion.completion_tokens
        return done

    def propose(self, messages, options, seed, task) -> tuple[Completion, Completion | None]:
        if self.engine is not None:
            from actors.loop import generate_step

            return generate_step(self, messages, options, seed)
        step = seed - options.seed
        action_part, state_part, mistake = oracle_answer(task, step, self.settings.mistake_rate, self.settings.seed)
        return (Completion(text=action_part, model="oracle", engine="oracle", error=None),
                Completion(text=state_part, model="oracle", engine="oracle"))

    def run_task(self, task: dict[str, Any]) -> dict[str, Any]:
        from actors.loop import LoopOptions, run_task

        options = LoopOptions(max_steps=self.settings.max_steps, temperature=self.settings.temperature, seed=self.settings.seed)
        return run_task(self, task, options)

    def stats(self) -> dict[str, int]:
        return dict(self.counters)
