"""Per-address request limits (per minute and per hour), in fixed windows like the specification's.

The Node server counts every route of an address in one place; here each application (ingest,
embed) counts its own, in the replica's memory: with N replicas an address gets up to N times the
limit. Put a shared limiter (a Ray actor or the load balancer) in front when that matters.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field


class AddressLimits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    per_address_per_minute: int = Field(default=100, ge=0)
    """Requests a client address may make per minute (0: no limit). Counted per replica."""
    per_address_per_hour: int = Field(default=1000, ge=0)
    """Requests a client address may make per hour (0: no limit). Counted per replica."""


@dataclass
class _Window:
    started: float
    count: int


class AddressLimiter:
    def __init__(self, limits: AddressLimits):
        self._limits = [(60.0, limits.per_address_per_minute), (3600.0, limits.per_address_per_hour)]
        self._windows: dict[tuple[str, float], _Window] = {}
        self._last_sweep = time.monotonic()

    def check(self, address: str, now: float | None = None) -> int | None:
        """Count one request; None when allowed, else the seconds to wait (the `retryAfter`)."""
        now = time.monotonic() if now is None else now
        if now - self._last_sweep > 300:
            self._sweep(now)
        retry = None
        for length, limit in self._limits:
            if not limit:
                continue
            window = self._windows.get((address, length))
            if window is None or now - window.started >= length:
                window = self._windows[(address, length)] = _Window(now, 0)
            window.count += 1
            if window.count > limit:
                retry = max(retry or 0, int(window.started + length - now) + 1)
        return retry

    def _sweep(self, now: float) -> None:
        self._windows = {key: window for key, window in self._windows.items() if now - window.started < key[1]}
        self._last_sweep = now
