"""The ingest app's Ray metrics, as Prometheus scrapes them, after real HTTP requests to the session's Serve: envelopes by
result, and the request latency histogram, under the names the Grafana dashboard queries."""

from __future__ import annotations

from ray_metrics import dashboard_series, key, scrape, short_of, total

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


def test_a_batch_of_one_envelope_is_timed_as_a_batch_request(http):
    """The tag came from the count of envelopes, so `ingest:batch` with one was timed as `single`."""
    before = scrape()
    answer = http.post("/v1/training/ingest:batch", json=[{}])
    assert answer.status_code == 200 and answer.json()["results"][0]["status"] == 400
    assert short_of(before, {key("ray_trajforge_ingest_request_seconds_count", endpoint="batch"): 1}) == {}
    single = key("ray_trajforge_ingest_request_seconds_count", endpoint="single")
    assert total(scrape(), single[0], **dict(single[1])) == total(before, single[0], **dict(single[1]))
