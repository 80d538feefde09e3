"""The leased task queue: a batch taken is out on lease until acknowledged; a failed or killed consumer loses none."""

from __future__ import annotations

import time
import uuid

import pytest

from actors.task_queue import QueueState, leased_batches, task_queue

TASKS = [{"task_id": f"t{i}"} for i in range(5)]


def ids(tasks):
    return [task["task_id"] for task in tasks]


def test_an_expired_lease_puts_its_tasks_back_in_front_in_their_order():
    state = QueueState()
    state.put(TASKS)
    lease, taken = state.take(3, lease_s=0.2)
    assert ids(taken) == ["t0", "t1", "t2"] and state.sizes() == {"ready": 2, "leased": 3}
    time.sleep(0.3)
    _, again = state.take(10, lease_s=60)
    assert ids(again) == ["t0", "t1", "t2", "t3", "t4"]
    assert state.renew(lease, 60) is False and state.ack(lease) is False  # the old lease is gone with its tasks


def test_a_renewed_lease_keeps_its_tasks_and_an_acknowledged_one_ends_them():
    state = QueueState()
    state.put(TASKS[:2])
    lease, _ = state.take(2, lease_s=0.2)
    for _ in range(3):
        time.sleep(0.1)
        assert state.renew(lease, 0.2)
    assert state.take(2, lease_s=1) == (None, []) and state.sizes() == {"ready": 0, "leased": 2}
    assert state.ack(lease) and state.sizes() == {"ready": 0, "leased": 0}


@pytest.fixture
def queue(serve_url):
    import ray

    handle = task_queue(f"test-{uuid.uuid4().hex[:8]}")
    yield handle
    ray.kill(handle.actor)


def test_a_consumer_that_fails_mid_batch_releases_it(queue):
    queue.put_nowait_batch(TASKS)
    batches = leased_batches(queue, size=2, idle_exit_s=0.5, poll_s=0.05)
    assert ids(next(batches)) == ["t0", "t1"]
    assert ids(next(batches)) == ["t2", "t3"]  # asking for the next batch acknowledged the first
    assert queue.sizes() == {"ready": 1, "leased": 2}
    batches.close()  # what `closing` does when the rollout raises while running the batch
    assert queue.sizes() == {"ready": 3, "leased": 0}
    assert ids(queue.take(5)[1]) == ["t2", "t3", "t4"]


def test_a_batch_outliving_its_lease_is_renewed_while_the_consumer_works(queue):
    queue.put_nowait_batch(TASKS[:2])
    batches = leased_batches(queue, size=2, idle_exit_s=0.2, lease_s=0.6, poll_s=0.05)
    assert ids(next(batches)) == ["t0", "t1"]
    time.sleep(1.5)  # several lease lengths: the keeper renews it
    assert queue.take(2) == (None, []) and queue.sizes()["leased"] == 2
    assert list(batches) == []  # acknowledged, then idle until the queue has been empty for idle_exit_s
    assert queue.empty()


def test_a_killed_consumers_batch_is_taken_again_once_its_lease_runs_out(queue):
    queue.put_nowait_batch(TASKS[:3])
    _, taken = queue.take(3, lease_s=0.5)  # a consumer that then dies: it never renews, acknowledges or releases
    assert ids(taken) == ["t0", "t1", "t2"]
    started = time.monotonic()
    retaken = [ids(batch) for batch in leased_batches(queue, size=3, idle_exit_s=0.2, poll_s=0.05)]
    assert retaken == [["t0", "t1", "t2"]] and time.monotonic() - started >= 0.4
    assert queue.empty()
