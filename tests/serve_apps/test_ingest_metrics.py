"""The ingest app's Ray metrics, as Prometheus scrapes them, after real HTTP requests to the session's Serve: envelopes by
result, and the request latency histogram, under the names the Grafana dashboard queries."""

from __future__ import annotations

from ray_metrics import dashboard_series, key, scrape, short_of

from trajforge import metric_names


def test_envelopes_by_result_and_request_latency_are_exported_as_the_dashboard_queries_them(http):
    before = scrape()
    assert http.post("/v1/training/ingest", content=b"{not json").status_code == 400  # counted, not timed
    assert http.post("/v1/training/ingest", json={}).status_code == 400  # a verdict: counted and timed
    assert short_of(before, {
        key("ray_trajforge_ingest_envelopes_total", result="malformed_json"): 1,
        key("ray_trajforge_ingest_envelopes_total"): 2,
        key("ray_trajforge_ingest_request_seconds_count", endpoint="single"): 1,
    }) == {}
    ingest_metrics = [metric_names.INGEST_ENVELOPES, metric_names.INGEST_REQUEST_SECONDS]
    assert dashboard_series(*ingest_metrics) <= {name for name, _ in scrape()}
