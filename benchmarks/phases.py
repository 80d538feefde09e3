"""Progress lines for long benchmark runs: `[  12.3 s] text`, flushed at once, so that a run that is slow
or stuck (on the GPU machine, under a time limit) shows how far it got."""

from __future__ import annotations

import time


class Phases:
    def __init__(self) -> None:
        self.begun = time.perf_counter()

    def __call__(self, text: str) -> None:
        print(f"[{time.perf_counter() - self.begun:6.1f} s] {text}", flush=True)


class TaskProgress:
    """A progress hook with tqdm's `update(n)`: one line per finished task."""

    def __init__(self, phase: Phases, total: int, what: str):
        self.phase, self.total, self.what, self.done = phase, total, what, 0

    def update(self, count: int) -> None:
        self.done += count
        self.phase(f"{self.what}: {self.done}/{self.total} tasks done")
