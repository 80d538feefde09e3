"""Group commit: envelopes from concurrent requests share one fsync.

Requests hand their verified envelopes to `submit`; one commit runs at a time on a dedicated thread,
and everything that arrives meanwhile goes into the next one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from serve_apps.ingest.verify import Candidate, Verdict


class GroupCommitter:
    def __init__(self, commit: Callable[[list[Candidate]], list[Verdict]], max_envelopes: int):
        self._commit = commit
        self._max = max_envelopes
        self._queue: list[tuple[list[Candidate], asyncio.Future]] = []
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-commit")
        self._draining = False

    async def submit(self, candidates: list[Candidate]) -> list[Verdict]:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.append((candidates, future))
        if not self._draining:
            self._draining = True
            loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                group, size = [], 0
                while self._queue and (not group or size + len(self._queue[0][0]) <= self._max):
                    entry = self._queue.pop(0)
                    group.append(entry)
                    size += len(entry[0])
                flat = [candidate for candidates, _ in group for candidate in candidates]
                try:
                    verdicts = await loop.run_in_executor(self._executor, self._commit, flat)
                except Exception as exc:  # every waiter gets the failure; nothing was acknowledged
                    for _, future in group:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                position = 0
                for candidates, future in group:
                    if not future.done():
                        future.set_result(verdicts[position : position + len(candidates)])
                    position += len(candidates)
        finally:
            self._draining = False

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True)
