"""Requests by outcome and their latency through `ray.util.metrics`, for the Serve apps that answer HTTP themselves
(the embed app and the generate front; ingest counts envelopes instead, in its own module).

Made in the replica that records them, so importing this module needs no Ray.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager

from serve_apps.http import HTTPError
from trajforge.metric_names import Metric

LATENCY_BOUNDARIES_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0]
OUTCOMES = "ok, bad_request, not_ready, rate_limited, error or hung_up (the client went away)"


def outcome(status: int) -> str:
    """The `outcome` tag of an answer with this HTTP status."""
    if status < 400:
        return "ok"
    if status == 429:
        return "rate_limited"
    if status == 503:
        return "not_ready"
    return "bad_request" if status < 500 else "error"


class RequestMetrics:
    """`requests` (a counter) and `latency` (a histogram), tagged by `tag_keys` and outcome."""

    def __init__(self, requests: Metric, latency: Metric, what: str, tag_keys: tuple[str, ...] = ()):
        from ray.util.metrics import Counter, Histogram

        keys = (*tag_keys, "outcome")
        self._requests = Counter(requests.name, description=f"{what} by outcome: {OUTCOMES}.", tag_keys=keys)
        self._latency = Histogram(latency.name, description=f"Time to answer {what}, by outcome.",
                                  boundaries=LATENCY_BOUNDARIES_S, tag_keys=keys)

    @contextmanager
    def request(self, **tags: str) -> Iterator[None]:
        """Counts and times the block: ok when it ends, else the outcome of the HTTPError (or other error) it raises."""
        started, result = time.perf_counter(), "ok"
        try:
            yield
        except HTTPError as exc:
            result = outcome(exc.status)
            raise
        except asyncio.CancelledError:
            result = "hung_up"
            raise
        except Exception:
            result = "error"
            raise
        finally:
            tags = {**tags, "outcome": result}
            self._requests.inc(1, tags=tags)
            self._latency.observe(time.perf_counter() - started, tags=tags)
