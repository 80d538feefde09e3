"""The embed app's metrics through `ray.util.metrics` (Prometheus: `ray_trajforge_embed_*`), and `RequestMetrics`:
requests by outcome and their latency, which the generate front shares.

Made in the replica that records them (the service builds them), so importing this module needs no Ray.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager

from serve_apps.http import HTTPError
from trajforge.embedding import MAX_INPUT_CHARS, truncate

LATENCY_BOUNDARIES_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0]
BATCH_SIZE_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64, 128, 256]
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
    """`<prefix>_requests` (a counter) and `<prefix>_request_seconds` (a histogram), tagged by `tag_keys` and outcome."""

    def __init__(self, prefix: str, what: str, tag_keys: tuple[str, ...] = ()):
        from ray.util.metrics import Counter, Histogram

        keys = (*tag_keys, "outcome")
        self._requests = Counter(f"{prefix}_requests", description=f"{what} by outcome: {OUTCOMES}.", tag_keys=keys)
        self._latency = Histogram(f"{prefix}_request_seconds", description=f"Time to answer {what}, by outcome.",
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


class EmbedMetrics(RequestMetrics):
    def __init__(self):
        from ray.util.metrics import Counter, Histogram

        super().__init__("trajforge_embed", "embed requests (POST /v1/embed, and /v1/embeddings through a handle)")
        self._texts = Counter("trajforge_embed_texts", description="Texts embedded.")
        self._truncated = Counter("trajforge_embed_truncated_inputs", description=f"Texts cut to their first {MAX_INPUT_CHARS} UTF-16 units before embedding.")
        self._batch_size = Histogram("trajforge_embed_batch_size", description="Texts per Serve batch (@serve.batch), before the model's coalescing.",
                                     boundaries=BATCH_SIZE_BOUNDARIES)

    def batch(self, size: int) -> None:
        self._batch_size.observe(size)

    def embedded(self, count: int) -> None:
        if count:
            self._texts.inc(count)

    def inputs(self, texts: list[str]) -> None:
        """Counts the texts the model will see truncated."""
        cut = sum(1 for text in texts if len(truncate(text)) < len(text))
        if cut:
            self._truncated.inc(cut)
