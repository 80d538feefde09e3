"""The generate front's Ray metrics, as Prometheus scrapes them, after real HTTP requests to the session's Serve."""

from __future__ import annotations

import time

import httpx
from ray_metrics import dashboard_series, key, scrape, short_of

from trajforge import metric_names


def test_requests_by_endpoint_and_outcome_tokens_and_hung_up_streams_are_exported(front_url):
    def health():
        return httpx.get(f"{front_url}/health", timeout=30).json()

    before, counted = scrape(), health()
    with httpx.Client(base_url=front_url, timeout=120) as http:
        answer = http.post("/v1/completions", json={"model": "small", "prompt": "def main(", "max_tokens": 4, "seed": 1})
        assert answer.status_code == 200, answer.text
        tokens = answer.json()["usage"]["completion_tokens"]
        assert http.post("/v1/chat/completions", json={"messages": [], "max_tokens": 2}).status_code == 400
        assert http.get("/v1/models").status_code == 200
        body = {"prompt": "def main(", "max_tokens": 4000, "temperature": 1.0, "seed": 2, "stream": True}
        with http.stream("POST", "/v1/completions", json=body) as stream:
            assert stream.status_code == 200
            next(line for line in stream.iter_lines() if line.startswith("data: "))  # then hang up
    deadline = time.monotonic() + 60
    while health().get("streams_hung_up", 0) == counted.get("streams_hung_up", 0) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert short_of(before, {
        key("ray_trajforge_generate_requests_total", endpoint="completions", outcome="ok"): 2,
        key("ray_trajforge_generate_requests_total", endpoint="chat_completions", outcome="bad_request"): 1,
        key("ray_trajforge_generate_requests_total", endpoint="models", outcome="ok"): 1,
        key("ray_trajforge_generate_request_seconds_count", endpoint="completions", outcome="ok"): 2,
        key("ray_trajforge_generate_completion_tokens_total"): tokens + 1,
        key("ray_trajforge_generate_streams_hung_up_total"): 1,
    }) == {}
    front_metrics = [metric for metric in metric_names.ALL if metric.name.startswith("trajforge_generate_")]
    assert dashboard_series(*front_metrics) <= {name for name, _ in scrape()}  # what the Grafana dashboard queries is what Ray exports
