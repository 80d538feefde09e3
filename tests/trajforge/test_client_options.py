"""What a caller gives IngestClient is checked at once, with a message naming the argument: a URL without a scheme is
not reported later as "no ingest service answers", and a negative timeout or an empty batch is not taken."""

from __future__ import annotations

import httpx
import pytest

from trajforge.client import IngestClient, IngestError, Session, contributor_id_for
from trajforge.contracts.envelope import EnvelopeRejected


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


def _opened(client: IngestClient, **arguments) -> None:
    client.open_session(**{"provider": "codex", "model": "gpt-5.5", "contributor_id": contributor_id_for("alice"), **arguments})


@pytest.mark.parametrize(("arguments", "error", "says"), [
    ({"contributor_id": "alice"}, EnvelopeRejected, r"contributor_id: must be 32 hex characters, as contributor_id_for\('alice'\)"),
    ({"version_hash": "abc"}, EnvelopeRejected, "app_version_hash: version_hash must be 64 hex characters"),
    ({"metadata": ["frontend"]}, TypeError, "metadata must be a dict"),
    ({"metadata": {"team_size": 0}}, EnvelopeRejected, "metadata.team_size: Input should be greater than or equal to 1"),
    ({"metadata": {"task_complexity": "huge"}}, EnvelopeRejected, "metadata.task_complexity"),
    ({"model": 5}, TypeError, "model must be a non-empty str"),
    ({"provider": ""}, TypeError, "provider must be a non-empty str"),
    ({"session_id": 7}, TypeError, "session_id must be a str or None"),
])
def test_a_session_whose_every_envelope_the_service_would_refuse_is_not_opened(arguments, error, says):
    asked = []
    service = httpx.MockTransport(lambda request: asked.append(request) or httpx.Response(500))
    with IngestClient("http://ingest.test", transport=service, max_retries=0) as client:
        with pytest.raises(error, match=says):
            _opened(client, **arguments)
    assert asked == []  # refused before the service was asked (no session left open on it)


def test_good_session_arguments_reach_the_service():
    asked = []
    service = httpx.MockTransport(lambda request: asked.append(request) or httpx.Response(503))
    with IngestClient("http://ingest.test", transport=service, max_retries=0) as client:
        with pytest.raises(IngestError, match="HTTP 503"):
            _opened(client, metadata={"agent_role": "frontend", "team_size": 3})
    assert [request.url.path for request in asked] == ["/v1/sessions/open"]


def test_a_closed_client_says_so_when_a_session_or_a_flush_still_uses_it(tmp_path):
    asked = []
    service = httpx.MockTransport(lambda request: asked.append(request) or httpx.Response(503))
    client = IngestClient("http://ingest.test", spool_path=tmp_path / "spool.db", transport=service, max_retries=0)
    session = Session(client, "sess_x", "c2VjcmV0", "0" * 32, "a" * 64, "codex", "gpt-5.5")
    client.close()
    for call in (lambda: session.send_chunk([{"step": 1, "type": "thought"}]), client.flush, lambda: _opened(client)):
        with pytest.raises(RuntimeError, match=r"this IngestClient \(http://ingest.test\) is closed: make a new one"):
            call()  # was sqlite3's "Cannot operate on a closed database." or httpx's "the client has been closed"
    assert session.sequence == 0 and asked == []
