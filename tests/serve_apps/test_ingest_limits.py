"""Rate limits and the trusted-proxy rule, against the `/limited` app (tiny limits, 127.0.0.1 trusted)."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from helpers import open_session, steps

from trajforge.client import IngestClient, IngestError


def _limited(serve_url: str) -> IngestClient:
    return IngestClient(serve_url + "/limited", max_retries=0)


def test_per_address_limit_answers_429_with_retry_after(serve_url, http):
    address = f"10.1.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"
    statuses = []
    for _ in range(8):
        response = http.get("/limited/v1/stats/summary", headers={"x-forwarded-for": address})
        statuses.append(response.status_code)
    assert statuses[:6] == [200] * 6 and statuses[6:] == [429, 429]
    answer = response.json()
    assert answer["error"] == "rate_limited" and answer["retryAfter"] >= 1
    assert int(response.headers["retry-after"]) == answer["retryAfter"]
    other = http.get("/limited/v1/stats/summary", headers={"x-forwarded-for": "10.9.9.9"})
    assert other.status_code == 200  # each address has its own window


def test_every_request_counts_toward_the_address_limit_as_the_specifications_middleware(serve_url, http):
    address = {"x-forwarded-for": f"10.4.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"}
    statuses = [http.get("/limited/health", headers=address).status_code for _ in range(4)]
    statuses += [http.get("/limited/v1/no-such-route", headers=address).status_code for _ in range(2)]
    statuses.append(http.get("/limited/health", headers=address).status_code)
    assert statuses == [200] * 4 + [404] * 2 + [429]
    preflight = http.options("/limited/v1/no-such-route", headers=address)  # CORS preflight: any path, never limited
    assert preflight.status_code == 204 and preflight.headers["access-control-allow-origin"] == "*"


def test_sessions_per_machine_per_hour(serve_url, monkeypatch):
    machine, waits = uuid.uuid4().hex, []
    monkeypatch.setattr("trajforge.client.transport.time.sleep", waits.append)
    with IngestClient(serve_url + "/limited", max_retries=5, backoff_max_s=60) as client:  # retries, as an agent's would
        client._http.headers.update({"x-forwarded-for": f"10.2.0.{uuid.uuid4().int % 250}"})
        open_session(client, machine=machine)
        open_session(client, machine=machine)
        with pytest.raises(IngestError) as refused:
            open_session(client, machine=machine)
    assert refused.value.status == 429 and refused.value.answer["retryAfter"] > 60
    assert waits == []  # a wait longer than backoff_max_s is not slept through: the caller hears of it at once


def test_envelopes_per_session(serve_url):
    with _limited(serve_url) as client:
        client._http.headers.update({"x-forwarded-for": f"10.3.0.{uuid.uuid4().int % 250}"})
        session = open_session(client)
        answers = [json.loads(json.dumps(session.send_chunk(steps(1, start=i + 1)))) for i in range(4)]
        # the cap is the CHUNK flow's: a full session can still get its feedback and be closed (and scored);
        # from another address, this one has used its 6 requests a minute
        client._http.headers.update({"x-forwarded-for": f"10.3.1.{uuid.uuid4().int % 250}"})
        feedback = session.send_feedback({"signal": "accepted", "timestamp": time.time(), "context": "done", "target_step": 3,
                                          "revision_rounds": 0, "delta_summary": None})
        closed = session.close({"status": "SUCCESS"})
    assert [a["status"] for a in answers] == [200, 200, 200, 429]
    assert answers[3]["error"] == "session_envelope_limit"
    assert feedback["status"] == 200 and feedback["accepted"] and closed["status"] == 200 and closed["accepted"]
