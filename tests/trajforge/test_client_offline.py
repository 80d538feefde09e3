"""The client SDK against a fake service (httpx.MockTransport): retries and backoff, what is never retried, the
offline mode (a send while the service is known down only spools; /health is probed at most every
offline_probe_s, as the specification's client probes every 60 s), and the specification's 10 s session timeouts."""

from __future__ import annotations

import json

import httpx
import pytest

from trajforge.client import IngestClient


class FakeService:
    def __init__(self, statuses=()):
        self.statuses, self.up, self.calls, self.bodies = list(statuses), True, [], []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request.url.path)
        if not self.up:
            raise httpx.ConnectError("connection refused")
        status = self.statuses.pop(0) if self.statuses else 200
        answer = {"accepted": status == 200, "duplicate": False, "message": f"answered {status}"}
        if request.url.path == "/v1/training/ingest":
            self.bodies.append(json.loads(request.content)) if status == 200 else None
        if request.url.path == "/v1/training/ingest:batch" and status == 200:
            batch = json.loads(request.content)
            self.bodies.extend(batch)
            return httpx.Response(200, json={"results": [{"index": i, "status": 200, **answer} for i in range(len(batch))]})
        return httpx.Response(status, json=answer)


def client_of(service: FakeService, **options) -> IngestClient:
    return IngestClient("http://ingest.test", transport=httpx.MockTransport(service), **options)


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504, 507])  # 507: the service's storage is full
def test_a_busy_or_failing_service_is_retried_with_growing_waits(status, sleeps):
    service = FakeService([status] * 4)
    with client_of(service, max_retries=5, backoff_base_s=1.0) as client:
        assert client.send("s", b'{"n":1}')["status"] == 200
    assert service.calls == ["/v1/training/ingest"] * 5
    assert [0.5 <= sleeps[0] <= 1, 1 <= sleeps[1] <= 2, 2 <= sleeps[2] <= 4, 4 <= sleeps[3] <= 8] == [True] * 4


@pytest.mark.parametrize("status", [400, 401, 404, 409, 413])
def test_a_refusal_is_not_retried_and_the_envelope_is_set_aside(status, sleeps):
    service = FakeService([status])
    with client_of(service, max_retries=5) as client:
        assert client.send("s", b'{"n":1}')["status"] == status
        assert (service.calls, sleeps, client.spool.pending(), len(client.spool.rejections())) == (["/v1/training/ingest"], [], 0, 1)


def test_while_offline_a_send_only_spools_and_health_is_probed_at_most_every_interval(sleeps, clock):
    service = FakeService()
    service.up = False
    with client_of(service, max_retries=5, offline_probe_s=60) as client:
        assert client.send("s", b'{"n":1}') is None  # finding the service down takes the retries, once
        assert len(service.calls) == 6 and len(sleeps) == 5
        service.calls.clear(), sleeps.clear()
        assert [client.send("s", b'{"n":%d}' % n) for n in (2, 3)] == [None, None]
        assert (service.calls, sleeps, client.spool.pending()) == ([], [], 3)  # no waiting, nothing asked

        clock[0] += 61  # the probe is due: one GET /health, still down, no backoff
        assert client.send("s", b'{"n":4}') is None
        assert (service.calls, sleeps) == (["/health"], [])
        clock[0] += 30
        assert client.send("s", b'{"n":5}') is None and service.calls == ["/health"]

        service.up, clock[0] = True, clock[0] + 31  # back: the next send delivers everything, in order
        assert client.send("s", b'{"n":6}')["status"] == 200
        assert [body["n"] for body in service.bodies] == [1, 2, 3, 4, 5, 6] and client.spool.pending() == 0
        service.calls.clear()
        assert client.send("s", b'{"n":7}')["status"] == 200 and service.calls == ["/v1/training/ingest"]


def test_flush_tries_the_service_even_while_offline_and_says_the_backlog_went(sleeps, caplog):
    service = FakeService()
    service.up = False
    with client_of(service, max_retries=0) as client:
        assert client.send("s", b'{"n":1}') is None
        assert client.send("s", b'{"n":2}') is None
        service.up = True
        with caplog.at_level("INFO", logger="trajforge.client"):
            report = client.flush()
        assert (report.delivered, report.pending) == (2, 0)
    assert [r.getMessage() for r in caplog.records if "answers again" in r.getMessage()] == [
        "ingest answers again: the spool's backlog is delivered (2 envelopes this drain, 0 duplicates, 0 set aside)"]


def test_session_open_and_close_wait_10_s_as_the_specification_says_and_envelopes_30_s():
    timeouts = {}

    def handler(request: httpx.Request) -> httpx.Response:
        timeouts[request.url.path] = request.extensions["timeout"]["read"]
        if request.url.path == "/v1/sessions/open":
            from trajforge import crypto

            return httpx.Response(200, json={"server_public_key": crypto.generate_keypair()[0]})
        return httpx.Response(200, json={"accepted": True})

    with IngestClient("http://ingest.test", transport=httpx.MockTransport(handler)) as client:
        session = client.open_session(provider="codex", model="o3", contributor_id="0" * 32, machine="m" * 64)
        session.close({"status": "SUCCESS"})
    assert timeouts == {"/v1/sessions/open": 10.0, "/v1/training/ingest": 30.0, "/v1/sessions/close": 10.0}


def test_closing_a_client_whose_in_memory_spool_still_holds_envelopes_says_they_are_lost(sleeps, caplog):
    service = FakeService()
    service.up = False
    with client_of(service, max_retries=0) as client:
        client.send("s", b'{"n":1}')
    assert any("1 envelopes were not delivered and are lost" in r.getMessage() and "spool_path" in r.getMessage() for r in caplog.records)


def test_closing_a_client_with_a_spool_file_keeps_them_quietly(sleeps, caplog, tmp_path):
    service = FakeService()
    service.up = False
    with client_of(service, max_retries=0, spool_path=tmp_path / "spool.db") as client:
        client.send("s", b'{"n":1}')
    assert not any("are lost" in r.getMessage() for r in caplog.records)
    with client_of(FakeService(), spool_path=tmp_path / "spool.db") as again:
        assert again.flush().delivered == 1
