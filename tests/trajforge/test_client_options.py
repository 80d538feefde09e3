"""What a caller gives IngestClient is checked at once, with a message naming the argument: a URL without a scheme is
not reported later as "no ingest service answers", and a negative timeout or an empty batch is not taken."""

from __future__ import annotations

import pytest

from trajforge.client import IngestClient


@pytest.mark.parametrize("url", ["127.0.0.1:8000", "localhost", "ftp://127.0.0.1:8000", "http://", "/v1/training/ingest"])
def test_a_url_without_an_http_scheme_and_host_is_refused_at_once(url):
    with pytest.raises(ValueError, match=r"base_url must be an http:// or https:// URL with a host.*http://127\.0\.0\.1:8000"):
        IngestClient(url)


def test_a_url_that_is_not_a_string_is_a_type_error():
    with pytest.raises(TypeError, match="base_url must be the service's URL as a str"):
        IngestClient(8000)


def test_a_good_url_loses_its_trailing_slash():
    with IngestClient("https://ingest.example.com:8443/") as client:
        assert client.base_url == "https://ingest.example.com:8443"


@pytest.mark.parametrize(("option", "value", "error", "says"), [
    ("timeout_s", -1, ValueError, "timeout_s must be more than 0 seconds"),
    ("timeout_s", "30", TypeError, "timeout_s must be a number of seconds"),
    ("session_timeout_s", 0, ValueError, "session_timeout_s must be more than 0"),
    ("offline_probe_s", -1, ValueError, "offline_probe_s must be at least 0"),
    ("backoff_base_s", -0.1, ValueError, "backoff_base_s must be at least 0"),
    ("backoff_max_s", float("nan"), ValueError, "backoff_max_s must be at least 0"),
    ("max_retries", -1, ValueError, "max_retries must be at least 0"),
    ("max_retries", True, TypeError, "max_retries must be a whole number"),
    ("batch_size", 0, ValueError, "batch_size must be at least 1"),
    ("max_body_bytes", 1.5, TypeError, "max_body_bytes must be a whole number"),
    ("max_steps_per_envelope", 0, ValueError, "max_steps_per_envelope must be at least 1"),
    ("max_events_per_request", 0, ValueError, "max_events_per_request must be at least 1"),
])
def test_a_bad_option_is_refused_naming_it(option, value, error, says):
    with pytest.raises(error, match=says):
        IngestClient("http://127.0.0.1:9", **{option: value})


def test_zero_retries_and_zero_waits_are_allowed():
    with IngestClient("http://127.0.0.1:9", max_retries=0, backoff_base_s=0, backoff_max_s=0, offline_probe_s=0) as client:
        assert client.transport.max_retries == 0


def test_a_background_drain_needs_a_positive_interval():
    with IngestClient("http://127.0.0.1:9") as client:
        with pytest.raises(ValueError, match="interval_s must be more than 0 seconds"):
            client.start_background_drain(-1)
        assert client._drainer is None
