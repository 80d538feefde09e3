"""The actor loop's task queue on Ray (the specification's Redis list), with leases so that no task is lost.

Producers (a synthetic-task job, a notebook, another driver) put task dicts into a named queue; a rollout
(`trajforge rollout --queue NAME`) takes them in batches and hands each batch to the generation actors,
until the queue has stayed empty for a while. The queue is a detached actor, so it outlives the driver
that made it, and tasks put before the rollout starts wait there.

A batch taken is leased, not removed (Redis' RPOPLPUSH pattern): the consumer renews its lease while the
batch runs and acknowledges it when every task of it has ended. A consumer that fails releases its batch
at once; one that is killed stops renewing, and its batch goes back to the front of the queue when the
lease runs out. Delivery is therefore at least once: a task whose consumer died may run again.

    from actors.task_queue import task_queue
    task_queue("refactor-tasks").put_nowait_batch(tasks)
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from typing import Any

NAMESPACE = "trajforge"
LEASE_S = 60.0


class QueueState:
    """Ready tasks in order, and the batches out on lease (id -> expiry, tasks); the queue actor's state."""

    def __init__(self) -> None:
        self.ready: deque[dict[str, Any]] = deque()
        self.leases: dict[str, tuple[float, list[dict[str, Any]]]] = {}

    def put(self, tasks: list[dict[str, Any]]) -> int:
        self.ready.extend(tasks)
        return len(self.ready)

    def take(self, count: int, lease_s: float) -> tuple[str | None, list[dict[str, Any]]]:
        """Up to `count` tasks under a new lease of `lease_s` seconds; expired leases are put back first."""
        self._expire()
        tasks = [self.ready.popleft() for _ in range(min(count, len(self.ready)))]
        if not tasks:
            return None, []
        lease_id = uuid.uuid4().hex
        self.leases[lease_id] = (time.monotonic() + lease_s, tasks)
        return lease_id, tasks

    def renew(self, lease_id: str, lease_s: float) -> bool:
        """False when the lease is gone (it expired and its tasks went back)."""
        if lease_id not in self.leases:
            return False
        self.leases[lease_id] = (time.monotonic() + lease_s, self.leases[lease_id][1])
        return True

    def ack(self, lease_id: str) -> bool:
        return self.leases.pop(lease_id, None) is not None

    def release(self, lease_id: str) -> int:
        """The lease's tasks back to the front of the queue, in their order; how many."""
        _, tasks = self.leases.pop(lease_id, (0.0, []))
        self.ready.extendleft(reversed(tasks))
        return len(tasks)

    def sizes(self) -> dict[str, int]:
        self._expire()
        return {"ready": len(self.ready), "leased": sum(len(tasks) for _, tasks in self.leases.values())}

    def _expire(self) -> None:
        now = time.monotonic()
        for lease_id in [lease_id for lease_id, (expiry, _) in self.leases.items() if expiry <= now]:
            self.release(lease_id)


class TaskQueue:
    """A handle on the named queue actor; every call is synchronous."""

    def __init__(self, actor):
        self.actor = actor

    def _call(self, method: str, *args):
        import ray

        return ray.get(getattr(self.actor, method).remote(*args))

    def put_nowait_batch(self, tasks: list[dict[str, Any]]) -> int:
        """Append the tasks; the number of ready tasks after."""
        return self._call("put", list(tasks))

    def put(self, task: dict[str, Any]) -> int:
        return self._call("put", [task])

    def take(self, count: int, lease_s: float = LEASE_S) -> tuple[str | None, list[dict[str, Any]]]:
        return self._call("take", count, lease_s)

    def renew(self, lease_id: str, lease_s: float = LEASE_S) -> bool:
        return self._call("renew", lease_id, lease_s)

    def ack(self, lease_id: str) -> bool:
        return self._call("ack", lease_id)

    def release(self, lease_id: str) -> int:
        return self._call("release", lease_id)

    def sizes(self) -> dict[str, int]:
        """{"ready": tasks waiting, "leased": tasks taken and not yet acknowledged}."""
        return self._call("sizes")

    def qsize(self) -> int:
        return self.sizes()["ready"]

    def empty(self) -> bool:
        return self.sizes() == {"ready": 0, "leased": 0}


def connect_cluster(address: str = "auto") -> None:
    """Connect this process to the running Ray cluster that holds the named queues; a ConfigError at once when there is none.

    A queue is a detached actor, so it lives only in a running cluster: a Ray started for this process alone would hold
    a queue that no producer can reach, and a rollout would wait on it for nothing. RAY_ADDRESS, when set, wins over
    `address` (Ray's own rule; `RAY_ADDRESS=local` asks for a Ray of this process alone, as the tests do). Already
    connected, it does nothing."""
    from trajforge.cluster import init_ray
    from trajforge.errors import ConfigError

    try:
        init_ray(address)
    except ConfigError as exc:
        raise ConfigError(f"a task queue lives in a running Ray cluster, and none could be joined at {address!r}: {exc}") from None


def task_queue(name: str, create: bool = True) -> TaskQueue:
    """The named queue, made on first use (detached, in namespace `trajforge`); with `create` false, a
    ConfigError when there is none."""
    import ray

    if not create:
        try:
            return TaskQueue(ray.get_actor(f"tasks-{name}", namespace=NAMESPACE))
        except ValueError:
            from trajforge.errors import ConfigError

            raise ConfigError(f"no task queue named {name!r} in this Ray cluster (`trajforge queue put {name} FILE` makes it)") from None
    actor = ray.remote(QueueState).options(name=f"tasks-{name}", namespace=NAMESPACE, lifetime="detached",
                                           get_if_exists=True, num_cpus=0).remote()
    return TaskQueue(actor)


def drop_queue(name: str) -> None:
    """Remove the named queue with the tasks still in it (ConfigError when there is none)."""
    import ray

    ray.kill(task_queue(name, create=False).actor, no_restart=True)


def leased_batches(queue: TaskQueue, size: int, idle_exit_s: float, lease_s: float = LEASE_S,
                   poll_s: float = 0.5) -> Iterator[list[dict[str, Any]]]:
    """Up to `size` tasks at a time as they arrive, each batch leased while the consumer works on it.

    Asking for the next batch acknowledges the last one; closing the generator early (the consumer failed)
    releases it back to the queue. Ends once nothing has been ready or out on lease for `idle_exit_s`, so a
    batch whose consumer died is waited for and taken again when its lease runs out."""
    idle_since = time.monotonic()
    while True:
        lease_id, tasks = queue.take(size, lease_s)
        if lease_id is None:
            if queue.sizes()["leased"]:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since >= idle_exit_s:
                return
            time.sleep(poll_s)
            continue
        stop = threading.Event()
        keeper = threading.Thread(target=_keep_leased, args=(queue, lease_id, lease_s, stop), name="lease-keeper", daemon=True)
        keeper.start()
        finished = False
        try:
            yield tasks
            finished = True
        finally:
            stop.set()
            keeper.join()
            queue.ack(lease_id) if finished else queue.release(lease_id)
        idle_since = time.monotonic()


def _keep_leased(queue: TaskQueue, lease_id: str, lease_s: float, stop: threading.Event) -> None:
    while not stop.wait(lease_s / 3):
        queue.renew(lease_id, lease_s)
