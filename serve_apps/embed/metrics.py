"""The embed app's metrics through `ray.util.metrics` (Prometheus: `ray_trajforge_embed_*`): its requests by outcome
(`RequestMetrics`), texts embedded and truncated, and Serve batch sizes.

Made in the replica that records them (the service builds them), so importing this module needs no Ray.
"""

from __future__ import annotations

from serve_apps.request_metrics import RequestMetrics
from trajforge import metric_names as names
from trajforge.embedding import MAX_INPUT_CHARS, truncate

BATCH_SIZE_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64, 128, 256]


class EmbedMetrics(RequestMetrics):
    def __init__(self):
        from ray.util.metrics import Counter, Histogram

        super().__init__(names.EMBED_REQUESTS, names.EMBED_REQUEST_SECONDS, "embed requests (POST /v1/embed, and /v1/embeddings through a handle)")
        self._texts = Counter(names.EMBED_TEXTS.name, description="Texts embedded.")
        self._truncated = Counter(names.EMBED_TRUNCATED_INPUTS.name, description=f"Texts cut to their first {MAX_INPUT_CHARS} UTF-16 units before embedding.")
        self._batch_size = Histogram(names.EMBED_BATCH_SIZE.name, description="Texts per Serve batch (@serve.batch), before the model's coalescing.",
                                     boundaries=BATCH_SIZE_BOUNDARIES)
        for counter in (self._texts, self._truncated):
            counter._record(0)  # their series exist from the start (`inc` refuses 0): a first truncation shows in rate()

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
