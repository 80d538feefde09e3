"""The generate front's metrics through `ray.util.metrics` (Prometheus: `ray_trajforge_generate_*`), and the replica's
totals that `/health` reports."""

from __future__ import annotations

from collections import Counter

from serve_apps.request_metrics import RequestMetrics
from trajforge import metric_names as names


def endpoint(path: str) -> str:
    """The `endpoint` tag of a path below the front's route prefix: chat_completions, completions, responses, embeddings, models, or other."""
    if path == "/v1/models" or path.startswith("/v1/models/"):
        return "models"
    for name in ("chat/completions", "completions", "responses", "embeddings"):
        if path == f"/v1/{name}":
            return name.replace("/", "_")
    return "other"


class GenerateMetrics(RequestMetrics):
    """Requests by endpoint and outcome (a client that went away before its answer: hung_up), their latency (a stream's:
    until its first event), completion tokens and streams cut off by their client. `counts` keeps this replica's totals
    for `/health`: requests, completion_tokens, requests_hung_up, streams_hung_up."""

    def __init__(self):
        from ray.util.metrics import Counter as RayCounter

        super().__init__(names.GENERATE_REQUESTS, names.GENERATE_REQUEST_SECONDS, "generate front requests (a stream: until its first event)", tag_keys=("endpoint",))
        self.counts: Counter[str] = Counter()
        self._exported = {
            "completion_tokens": RayCounter(names.GENERATE_COMPLETION_TOKENS.name, description="Completion tokens the generate front served."),
            "streams_hung_up": RayCounter(names.GENERATE_STREAMS_HUNG_UP.name, description="Streamed answers whose client went away before their end."),
        }
        for counter in self._exported.values():
            counter._record(0)  # their series exist from the start (`inc` refuses 0): a first hang-up shows in rate()

    def add(self, name: str, amount: int = 1) -> None:
        """Adds to a `/health` total, and to its Ray metric where it has one (requests and requests_hung_up are in
        `trajforge_generate_requests`, by outcome)."""
        self.counts[name] += amount
        metric = self._exported.get(name)
        if metric is not None and amount > 0:
            metric.inc(amount)
