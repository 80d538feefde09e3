"""The embed app's Ray metrics, as Prometheus scrapes them, after real HTTP requests to the session's Serve."""

from __future__ import annotations

import time

from ray_metrics import dashboard_series, key, scrape, short_of

from trajforge import metric_names
from trajforge.embedding import MAX_INPUT_CHARS


def _wait(condition, what: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.5)


def test_requests_by_outcome_texts_batches_and_truncations_are_exported(http):
    _wait(lambda: http.get("/v1/embed").json()["ready"], "the embed model did not load")
    _wait(lambda: http.get("/broken-embed").json()["error"], "the broken embed app did not report its load error")
    before = scrape()
    texts = ["x" * (MAX_INPUT_CHARS + 1), "rename fetch_user to load_user", "add a retry with backoff"]
    assert http.post("/v1/embed", json={"input": texts}).status_code == 200
    assert http.post("/v1/embed", json={"input": 5}).status_code == 400
    assert http.post("/broken-embed", json={"input": "hello"}).status_code == 503
    assert short_of(before, {
        key("ray_trajforge_embed_requests_total", outcome="ok"): 1,
        key("ray_trajforge_embed_requests_total", outcome="bad_request"): 1,
        key("ray_trajforge_embed_requests_total", outcome="not_ready"): 1,
        key("ray_trajforge_embed_request_seconds_count", outcome="ok"): 1,
        key("ray_trajforge_embed_texts_total"): len(texts),
        key("ray_trajforge_embed_truncated_inputs_total"): 1,
        key("ray_trajforge_embed_batch_size_count"): 1,
        key("ray_trajforge_embed_batch_size_sum"): len(texts),
    }) == {}
    embed_metrics = [metric for metric in metric_names.ALL if metric.name.startswith("trajforge_embed_")]
    assert dashboard_series(*embed_metrics) <= {name for name, _ in scrape()}  # what the Grafana dashboard queries is what Ray exports
