"""`SandboxPool`: N jails at once behind a bounded queue, for Ray actors and Ray Data stages.

    pool = SandboxPool(workers=4, queue_size=16)
    futures = [pool.submit_action(ws, action) for ws, action in work]   # blocks while 16 are waiting
    results = [f.result() for f in futures]

Each job is one jailed process tree, so threads are enough (the work happens in the jails). `submit_*`
blocks while the queue is full (backpressure), or raises `PoolFull` after `timeout_s`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sandbox.models import SandboxResult, TestResult
from sandbox.runner import Sandbox
from sandbox.settings import SandboxSettings
from trajforge.errors import TrajforgeError


class PoolFull(TrajforgeError, RuntimeError):
    """The pool's queue stayed full for the whole timeout."""


class SandboxPool:
    def __init__(self, workers: int = 2, queue_size: int | None = None, settings: SandboxSettings | None = None,
                 sandbox: Sandbox | None = None):
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.sandbox = sandbox or Sandbox(settings)
        self.workers = workers
        self.queue_size = queue_size if queue_size is not None else 4 * workers
        self._slots = threading.BoundedSemaphore(workers + self.queue_size)
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox")

    def _submit(self, fn: Callable[..., Any], *args: Any, timeout_s: float | None = None) -> Future:
        acquired = self._slots.acquire(timeout=timeout_s) if timeout_s is not None else self._slots.acquire()
        if not acquired:
            raise PoolFull(f"{self.workers} jails busy and {self.queue_size} jobs queued for {timeout_s} s")
        try:
            future = self._executor.submit(fn, *args)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda _: self._slots.release())
        return future

    def submit_action(self, workspace: Path, action: Mapping[str, Any] | Any, timeout_s: float | None = None) -> Future:
        """Future of `Sandbox.apply_action(workspace, action)`."""
        return self._submit(self.sandbox.apply_action, workspace, action, timeout_s=timeout_s)

    def submit_tests(self, workspace: Path, spec: Any = None, timeout_s: float | None = None) -> Future:
        """Future of `Sandbox.run_tests(workspace, spec)`."""
        return self._submit(self.sandbox.run_tests, workspace, spec, timeout_s=timeout_s)

    def apply_many(self, work: Iterable[tuple[Path, Any]]) -> list[SandboxResult]:
        """Apply (workspace, action) pairs in parallel; results in the input's order."""
        futures = [self.submit_action(workspace, action) for workspace, action in work]
        return [future.result() for future in futures]

    def test_many(self, work: Iterable[tuple[Path, Any]]) -> list[TestResult]:
        futures = [self.submit_tests(workspace, spec) for workspace, spec in work]
        return [future.result() for future in futures]

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
