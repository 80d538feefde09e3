"""The supervisor of the generation actors and the teacher workers (specification section 6.1: health polled every 15 s).

Each round it asks every actor's `health()` (in the actors' `control` concurrency group, so a busy actor
still answers) and kills, with `ray.kill(actor, no_restart=False)`, one that does not answer within
`timeout_s`, fails to, or says `ok: False` (an engine stuck on a generation that timed out). Ray then
restarts it (`max_restarts`) and re-runs the calls it had in flight (`max_task_retries`). A killed actor
is not polled again until its restart answers `ready()`, however long the model takes to load.

It does not protect against an actor Ray is already restarting after a crash of its own that takes
longer than `timeout_s` to come back: that one is killed once more, which costs one of its restarts.
It only watches actors made by `start_actors` or `start_teacher_workers` (a `health` method and the `control` group);
its log names each by the `kind` its health last said ("generation actor 0", "teacher worker 1"), and one that has not
answered it yet as "actor 2".
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from actors.actor import CONTROL_GROUP

log = logging.getLogger(__name__)


class _Restart:
    """An actor the supervisor killed: its `ready()` call on the new process, and the old process's pid."""

    def __init__(self, ref: Any, old_pid: int | None):
        self.ref, self.old_pid = ref, old_pid


def supervise(actors: list, interval_s: float = 15.0, timeout_s: float = 10.0, stop: threading.Event | None = None,
              on_report: Callable[[list[dict[str, Any]]], None] | None = None) -> None:
    """Poll the actors every `interval_s` until `stop` is set; `on_report` gets each round's report:
    per actor its index, `healthy`, its `health` dict (when it answered) and `status` (ok, killed,
    restarting, restarted or dead)."""
    stop = stop or threading.Event()
    restarts: dict[int, _Restart] = {}
    last_health: dict[int, dict[str, Any]] = {}  # what each actor's latest answer said: its pid and kind
    dead: set[int] = set()
    while not stop.is_set():
        report = _poll(actors, timeout_s, restarts, last_health, dead)
        if on_report is not None:
            on_report(report)
        stop.wait(interval_s)


def _poll(actors: list, timeout_s: float, restarts: dict[int, _Restart], last_health: dict[int, dict[str, Any]],
          dead: set[int]) -> list[dict[str, Any]]:
    import ray

    # never retried: a check that failed is the answer (a retry would outlive the kill and only log Ray's notice)
    health_refs = {index: actor.health.options(concurrency_group=CONTROL_GROUP, max_task_retries=0).remote()
                   for index, actor in enumerate(actors) if index not in restarts and index not in dead}
    waiting = [*health_refs.values(), *(restart.ref for restart in restarts.values())]
    answered, _ = ray.wait(waiting, num_returns=len(waiting), timeout=timeout_s) if waiting else ([], [])
    answered = set(answered)
    report = []
    for index, actor in enumerate(actors):
        if index in dead:
            report.append({"index": index, "healthy": False, "health": None, "status": "dead"})
        elif index in restarts:
            report.append(_check_restart(index, actor, restarts, last_health, dead, answered))
        else:
            report.append(_check_health(index, actor, health_refs[index], timeout_s, restarts, last_health, dead, answered))
    return report


def actor_name(last_health: dict[int, dict[str, Any]], index: int) -> str:
    """What the actor is, as its latest health answer said (`kind`), and its index: "generation actor 0", "teacher
    worker 1"; "actor 2" for one that has not answered yet (one hung from the start)."""
    return f"{last_health.get(index, {}).get('kind') or 'actor'} {index}"


def _answer(ref: Any) -> tuple[dict[str, Any] | None, str | None]:
    """The call's result, or the reason it has none; `ActorDiedError` (restarts used up) is raised."""
    import ray

    try:
        return ray.get(ref), None
    except ray.exceptions.ActorDiedError:
        raise
    except Exception as exc:  # the health call itself failed: the actor is unwell
        return None, f"its health check failed: {type(exc).__name__}: {str(exc)[:200]}"


def _check_health(index: int, actor: Any, ref: Any, timeout_s: float, restarts: dict[int, _Restart],
                  last_health: dict[int, dict[str, Any]], dead: set[int], answered: set) -> dict[str, Any]:
    import ray

    health, reason = None, f"it did not answer its health check in {timeout_s:.0f} s"
    if ref in answered:
        try:
            health, reason = _answer(ref)
        except ray.exceptions.ActorDiedError as exc:
            return _died(index, exc, last_health, dead)
    if health is not None:
        last_health[index] = health
        if health.get("ok", True):
            return {"index": index, "healthy": True, "health": health, "status": "ok"}
        reason = f"its engine has been stuck for {health.get('stuck_s', 0):.0f} s on a generation that timed out"
    log.warning("%s is unhealthy (%s): killing it so that Ray restarts it and re-runs its tasks", actor_name(last_health, index), reason)
    ray.kill(actor, no_restart=False)
    restarts[index] = _Restart(actor.ready.options(concurrency_group=CONTROL_GROUP).remote(), last_health.get(index, {}).get("pid"))
    return {"index": index, "healthy": False, "health": health, "status": "killed", "reason": reason}


def _check_restart(index: int, actor: Any, restarts: dict[int, _Restart], last_health: dict[int, dict[str, Any]],
                   dead: set[int], answered: set) -> dict[str, Any]:
    import ray

    restart = restarts[index]
    if restart.ref not in answered:
        return {"index": index, "healthy": False, "health": None, "status": "restarting"}
    try:
        health, _ = _answer(restart.ref)
    except ray.exceptions.ActorDiedError as exc:
        del restarts[index]
        return _died(index, exc, last_health, dead)
    if health is None or health["pid"] == restart.old_pid:  # answered before the kill landed: wait for the new process
        restart.ref = actor.ready.options(concurrency_group=CONTROL_GROUP).remote()
        return {"index": index, "healthy": False, "health": None, "status": "restarting"}
    del restarts[index]
    last_health[index] = health
    log.info("%s restarted (pid %s)", actor_name(last_health, index), health["pid"])
    return {"index": index, "healthy": True, "health": health, "status": "restarted"}


def _died(index: int, exc: Exception, last_health: dict[int, dict[str, Any]], dead: set[int]) -> dict[str, Any]:
    dead.add(index)
    log.error("%s is dead for good (its restarts are used up): %s", actor_name(last_health, index), str(exc).splitlines()[0][:200])
    return {"index": index, "healthy": False, "health": None, "status": "dead"}
