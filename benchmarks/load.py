"""A closed-loop HTTP load generator: N concurrent workers, each sending its next body when answered."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class LoadResult:
    requests: int
    seconds: float
    statuses: dict[int, int]

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


async def _run(url: str, bodies: Sequence[bytes], concurrency: int, duration_s: float) -> LoadResult:
    import aiohttp

    statuses: dict[int, int] = {}
    position = 0
    deadline = time.perf_counter() + duration_s
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers={"content-type": "application/json"}) as session:

        async def worker() -> None:
            nonlocal position
            while time.perf_counter() < deadline and position < len(bodies):
                body = bodies[position]
                position += 1
                async with session.post(url, data=body) as response:
                    await response.read()
                    statuses[response.status] = statuses.get(response.status, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return LoadResult(sum(statuses.values()), elapsed, statuses)


def run_load(url: str, bodies: Sequence[bytes], concurrency: int, duration_s: float) -> LoadResult:
    """Send `bodies` in order from `concurrency` workers until they run out or `duration_s` passes."""
    return asyncio.run(_run(url, bodies, concurrency, duration_s))
