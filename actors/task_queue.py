"""The actor loop's task queue on Ray (the specification's Redis list): a named `ray.util.queue.Queue`.

Producers (a synthetic-task job, a notebook, another driver) put task dicts into it by name; a rollout
(`trajforge rollout --queue NAME`) takes them in batches and hands each batch to the generation actors,
until the queue has stayed empty for a while. The queue is detached, so it outlives the driver that
made it and tasks put before the rollout starts wait there.

    from actors.task_queue import task_queue
    task_queue("refactor-tasks").put_nowait_batch(tasks)
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

NAMESPACE = "trajforge"


def task_queue(name: str, maxsize: int = 0):
    """The named queue, made on first use (detached, in namespace `trajforge`)."""
    from ray.util.queue import Queue

    return Queue(maxsize=maxsize, actor_options={"name": f"tasks-{name}", "namespace": NAMESPACE, "lifetime": "detached",
                                                 "get_if_exists": True, "num_cpus": 0})


def batches(queue, size: int, idle_exit_s: float, poll_s: float = 0.5) -> Iterator[list[dict[str, Any]]]:
    """Up to `size` tasks at a time as they arrive; ends once the queue has been empty for `idle_exit_s`."""
    from ray.util.queue import Empty

    idle_since = time.monotonic()
    while True:
        count = min(size, queue.qsize())
        if count:
            try:
                yield queue.get_nowait_batch(count)
            except Empty:  # another consumer took them first
                continue
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since >= idle_exit_s:
            return
        else:
            time.sleep(poll_s)
