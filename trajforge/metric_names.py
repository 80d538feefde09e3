"""Every metric trajforge exports through `ray.util.metrics`: its name, kind and tag keys, in one place.

The modules that make the metrics (serve_apps/*/metrics.py, serve_apps/request_metrics.py, actors/actor.py) take
their names from here, and so does the Grafana dashboard (trajforge/grafana_dashboard.py), so the two cannot
disagree. Prometheus sees each name with Ray's prefix and a suffix per kind: `ray_<name>_total` for a counter,
`ray_<name>_bucket`, `_sum` and `_count` for a histogram (`Metric.series`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

RAY_PREFIX = "ray_"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}


@dataclass(frozen=True)
class Metric:
    name: str
    """The name given to `ray.util.metrics` (no prefix, no suffix)."""
    kind: Literal["counter", "histogram"]
    tags: tuple[str, ...] = ()
    """The tag keys the metric is made with."""

    def series(self, suffix: str = "") -> str:
        """The Prometheus series name: `ray_<name><suffix>`, the suffix one of this kind's (`_total`, `_bucket`, ...)."""
        if suffix not in SUFFIXES[self.kind]:
            raise ValueError(f"{self.name} is a {self.kind}: its series end in {', '.join(SUFFIXES[self.kind])}, not {suffix!r}")
        return f"{RAY_PREFIX}{self.name}{suffix}"


ACTOR_TAGS = ("actor", "engine", "model")

INGEST_ENVELOPES = Metric("trajforge_ingest_envelopes", "counter", ("result",))
INGEST_REQUEST_SECONDS = Metric("trajforge_ingest_request_seconds", "histogram", ("endpoint",))

EMBED_REQUESTS = Metric("trajforge_embed_requests", "counter", ("outcome",))
EMBED_REQUEST_SECONDS = Metric("trajforge_embed_request_seconds", "histogram", ("outcome",))
EMBED_TEXTS = Metric("trajforge_embed_texts", "counter")
EMBED_TRUNCATED_INPUTS = Metric("trajforge_embed_truncated_inputs", "counter")
EMBED_BATCH_SIZE = Metric("trajforge_embed_batch_size", "histogram")

GENERATE_REQUESTS = Metric("trajforge_generate_requests", "counter", ("endpoint", "outcome"))
GENERATE_REQUEST_SECONDS = Metric("trajforge_generate_request_seconds", "histogram", ("endpoint", "outcome"))
GENERATE_COMPLETION_TOKENS = Metric("trajforge_generate_completion_tokens", "counter")
GENERATE_STREAMS_HUNG_UP = Metric("trajforge_generate_streams_hung_up", "counter")

GENERATION_LATENCY = Metric("trajforge_actor_latency_s", "histogram", ACTOR_TAGS)  # the specification's actor_latency (section 6.2)
GENERATED_TOKENS = Metric("trajforge_generated_tokens", "counter", ACTOR_TAGS)
GENERATION_TOKENS_PER_S = Metric("trajforge_generation_tokens_per_s", "histogram", ACTOR_TAGS)
PARSE_FAILURES = Metric("trajforge_parse_failures", "counter", ACTOR_TAGS)
SANDBOX_FAILURES = Metric("trajforge_sandbox_failures", "counter", ACTOR_TAGS)

ALL = tuple(value for value in dict(globals()).values() if isinstance(value, Metric))


def by_series(series: str) -> Metric | None:
    """The metric a Prometheus series name belongs to (`ray_trajforge_embed_requests_total` -> EMBED_REQUESTS), or None."""
    for metric in ALL:
        if any(metric.series(suffix) == series for suffix in SUFFIXES[metric.kind]):
            return metric
    return None
