"""The embed service's model calls: batches that wait while the model is busy share its next call, in passes sized for the device."""

from __future__ import annotations

import asyncio
import threading

import pytest

from serve_apps.embed.coalesce import Coalescer


class GatedCompute:
    """Doubles each item; the first call blocks until `release` is set, so later batches pile up."""

    def __init__(self):
        self.release = threading.Event()
        self.calls: list[list[int]] = []

    def __call__(self, items: list[int]) -> list[int]:
        self.calls.append(list(items))
        if len(self.calls) == 1:
            self.release.wait(10)
        return [item * 2 for item in items]


async def _pile_up(coalescer: Coalescer, compute: GatedCompute, batches: list[list[int]]):
    """Start the first batch, wait until the model is busy with it, queue the others, then release it."""
    first = asyncio.create_task(coalescer.run(batches[0]))
    while not compute.calls:
        await asyncio.sleep(0.001)
    rest = [asyncio.create_task(coalescer.run(batch)) for batch in batches[1:]]
    await asyncio.sleep(0.01)
    compute.release.set()
    return await asyncio.gather(first, *rest, return_exceptions=True)


def test_batches_waiting_for_a_busy_model_share_one_call_and_get_their_own_results():
    compute = GatedCompute()
    coalescer = Coalescer(compute, max_items=64)
    batches = [[1], [2, 3], [4], [5, 6, 7]]
    results = asyncio.run(_pile_up(coalescer, compute, batches))
    assert results == [[2], [4, 6], [8], [10, 12, 14]]
    assert compute.calls == [[1], [2, 3, 4, 5, 6, 7]]
    assert (coalescer.calls, coalescer.items) == (2, 7)


def test_a_call_never_exceeds_max_items_and_never_splits_a_batch():
    compute = GatedCompute()
    coalescer = Coalescer(compute, max_items=4)
    batches = [[0], [1, 2], [3, 4], [5], [6, 7, 8, 9, 10]]
    results = asyncio.run(_pile_up(coalescer, compute, batches))
    assert results == [[2 * item for item in batch] for batch in batches]
    # after the first call: [1,2]+[3,4] fill 4; [5] alone (the next batch would overflow); the 5-item batch alone
    assert compute.calls == [[0], [1, 2, 3, 4], [5], [6, 7, 8, 9, 10]]


def test_a_failing_call_fails_its_callers_only_and_later_calls_still_run():
    state = {"fail": True}
    gate = threading.Event()

    def compute(items):
        if state["fail"]:
            gate.wait(10)
            state["fail"] = False
            raise RuntimeError("model exploded")
        return [item + 100 for item in items]

    async def scenario():
        coalescer = Coalescer(compute, max_items=8)
        doomed = asyncio.create_task(coalescer.run([1]))
        await asyncio.sleep(0.01)
        gate.set()
        with pytest.raises(RuntimeError, match="model exploded"):
            await doomed
        return await coalescer.run([2, 3])

    assert asyncio.run(scenario()) == [102, 103]


def test_a_result_count_that_does_not_match_is_an_error_not_a_shifted_answer():
    coalescer = Coalescer(lambda items: items[:-1], max_items=8)
    with pytest.raises(RuntimeError, match="2 results for 3 items"):
        asyncio.run(coalescer.run([1, 2, 3]))


def test_a_cancelled_caller_does_not_disturb_the_others():
    compute = GatedCompute()

    async def scenario():
        coalescer = Coalescer(compute, max_items=64)
        first = asyncio.create_task(coalescer.run([1]))
        while not compute.calls:
            await asyncio.sleep(0.001)
        gone = asyncio.create_task(coalescer.run([2]))
        kept = asyncio.create_task(coalescer.run([3]))
        await asyncio.sleep(0.01)
        gone.cancel()
        compute.release.set()
        return await first, await kept, gone.cancelled()

    assert asyncio.run(scenario()) == ([2], [6], True)


def test_max_items_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        Coalescer(lambda items: items, max_items=0)


@pytest.mark.parametrize("given, expected", [({}, 8), ({"max_batch_size": 4}, 4), ({"num_gpus": 1}, 64), ({"forward_batch_size": 32}, 32)])
def test_forward_passes_are_small_on_the_cpu_and_whole_calls_on_a_gpu(given, expected):
    from serve_apps.embed.service import forward_batch_size
    from serve_apps.embed.settings import EmbedSettings

    assert forward_batch_size(EmbedSettings(**given)) == expected
