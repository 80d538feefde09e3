"""One model call at a time, as large as the backlog: batches that wait are merged into the next call.

Ray Serve's `@serve.batch` forms a batch every `batch_wait_timeout_s` whether or not the model is
free, so under load the batches queue up small (a few texts each) behind the one that is running and
the model runs at its small-batch speed. `Coalescer` sits behind `@serve.batch`: when the model is
busy, the batches that arrive wait here; when it is free, all of them (up to `max_items` texts) go
into one call on the one model thread, and each batch gets its own slice of the results back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class Coalescer(Generic[Item, Result]):
    def __init__(self, compute: Callable[[list[Item]], Sequence[Result]], max_items: int, thread_name: str = "coalesced-model"):
        if max_items < 1:
            raise ValueError(f"max_items must be at least 1, got {max_items}")
        self.compute = compute
        self.max_items = max_items
        self.calls = 0
        self.items = 0
        self.busy_s = 0.0
        self._waiting: list[tuple[list[Item], asyncio.Future]] = []
        self._drainer: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)

    async def run(self, items: list[Item]) -> list[Result]:
        """`compute(items)`, possibly merged with other callers' items into one call."""
        if not items:
            return []
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((list(items), future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._waiting:
            taken = self._take()
            merged = [item for items, _ in taken for item in items]
            started = time.perf_counter()
            try:
                results = await loop.run_in_executor(self._executor, self.compute, merged)
                if len(results) != len(merged):
                    raise RuntimeError(f"compute returned {len(results)} results for {len(merged)} items")
            except Exception as exc:  # every caller of this call gets the error; later calls still run
                for _, future in taken:
                    if not future.done():
                        future.set_exception(exc)
                continue
            finally:
                self.busy_s += time.perf_counter() - started
            self.calls += 1
            self.items += len(merged)
            start = 0
            for items, future in taken:
                if not future.done():  # a caller that was cancelled no longer wants its slice
                    future.set_result(list(results[start : start + len(items)]))
                start += len(items)

    def _take(self) -> list[tuple[list[Item], asyncio.Future]]:
        """The oldest waiting batches, whole, up to `max_items` texts (always at least one batch)."""
        taken, count = [], 0
        while self._waiting and (not taken or count + len(self._waiting[0][0]) <= self.max_items):
            entry = self._waiting.pop(0)
            taken.append(entry)
            count += len(entry[0])
        return taken
