"""Ingest counters and latency histograms through `ray.util.metrics`, so they show in the Ray dashboard."""

from __future__ import annotations

from collections.abc import Iterable

from trajforge import metric_names

LATENCY_BOUNDARIES_S = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]


class IngestMetrics:
    def __init__(self):
        from ray.util.metrics import Counter, Histogram

        self._envelopes = Counter(
            metric_names.INGEST_ENVELOPES.name, description="Envelopes by result: accepted, duplicate, or the rejection reason.", tag_keys=("result",)
        )
        self._latency = Histogram(
            metric_names.INGEST_REQUEST_SECONDS.name, description="Time to answer an ingest request, durable write included.", boundaries=LATENCY_BOUNDARIES_S, tag_keys=("endpoint",)
        )

    def record(self, verdicts: Iterable, seconds: float, endpoint: str = "single") -> None:
        """One request's envelopes by result and its latency, tagged with the `endpoint` it came to (single, batch)."""
        verdicts = list(verdicts)
        counts: dict[str, int] = {}
        for verdict in verdicts:
            if verdict.status == 200:
                result = "duplicate" if verdict.body.get("duplicate") else "accepted"
            else:
                result = verdict.body.get("error", str(verdict.status))
            counts[result] = counts.get(result, 0) + 1
        for result, count in counts.items():
            self._envelopes.inc(count, tags={"result": result})
        self._latency.observe(seconds, tags={"endpoint": endpoint})

    def rejected(self, reason: str) -> None:
        self._envelopes.inc(1, tags={"result": reason})
