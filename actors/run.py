"""Drive the actor loop over many tasks: each task goes to one actor (by its id, so its turns reuse that
actor's prefix cache), runs with a deadline, and fails alone. While the tasks run, the supervisor
(actors/supervisor.py) polls the generation actors' health and has Ray restart one that hangs, so the
tasks it held are re-run instead of waiting out the deadline."""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Iterable
from typing import Any

from actors.settings import ActorSettings

HEALTH_INTERVAL_S = ActorSettings.model_fields["health_interval_s"].default


def actor_for(task_id: str, count: int) -> int:
    """A stable choice of actor per task id."""
    return zlib.crc32(task_id.encode("utf-8")) % count


def run_loop(actors: list, tasks: Iterable[dict[str, Any]], task_timeout_s: float = 900.0, progress: Any = None,
             concurrency_per_actor: int = 4, health_interval_s: float | None = HEALTH_INTERVAL_S,
             health_timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """Summaries in the tasks' order. The run's deadline is `task_timeout_s` per wave of tasks an actor
    takes at once; tasks still running then are cancelled and reported as timed out.

    `health_interval_s` (`actors.health_interval_s`; None: no supervisor): how often the supervisor polls
    the actors that have a `health` method (GenerationActors); one that does not answer in
    `health_timeout_s`, or reports its engine stuck, is killed so that Ray restarts it."""
    from actors.supervisor import supervise

    watched = [actor for actor in actors if hasattr(actor, "health")] if health_interval_s else []
    stop = threading.Event()
    supervisor = threading.Thread(target=supervise, args=(watched, health_interval_s, health_timeout_s, stop),
                                  name="actor-supervisor", daemon=True) if watched else None
    if supervisor is not None:
        supervisor.start()
    try:
        return _run(actors, list(tasks), task_timeout_s, progress, concurrency_per_actor)
    finally:
        stop.set()
        if supervisor is not None:
            supervisor.join()


def _run(actors: list, tasks: list[dict[str, Any]], task_timeout_s: float, progress: Any, concurrency_per_actor: int) -> list[dict[str, Any]]:
    import math

    import ray

    assigned = [actor_for(str(task.get("task_id")), len(actors)) for task in tasks]
    refs = [actors[index].run_task.remote(task) for index, task in zip(assigned, tasks)]
    waves = max((math.ceil(assigned.count(index) / concurrency_per_actor) for index in set(assigned)), default=1)
    task_timeout_s = task_timeout_s * waves
    started = time.monotonic()
    summaries: dict[int, dict[str, Any]] = {}
    index_of = {ref: index for index, ref in enumerate(refs)}
    pending = list(refs)
    while pending:
        left = task_timeout_s - (time.monotonic() - started)
        done, pending = ray.wait(pending, num_returns=1, timeout=max(left, 0))
        for ref in done:
            try:
                summaries[index_of[ref]] = ray.get(ref)
            except Exception as exc:  # the actor died for good (restarts used up)
                summaries[index_of[ref]] = {"task_id": tasks[index_of[ref]].get("task_id"), "verified": False, "steps": 0,
                                            "errors": [f"actor failed: {type(exc).__name__}: {str(exc)[:300]}"]}
            if progress is not None:
                progress.update(1)
        if not done and left <= 0:
            for ref in pending:
                ray.cancel(ref)
                summaries[index_of[ref]] = {"task_id": tasks[index_of[ref]].get("task_id"), "verified": False, "steps": 0,
                                            "errors": [f"task timed out after {task_timeout_s} s"]}
            break
    return [summaries[index] for index in range(len(refs))]
