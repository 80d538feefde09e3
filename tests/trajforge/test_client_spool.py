"""The client SDK's durable spool, against the real service: offline periods, restarts, permanent refusals."""

from __future__ import annotations

import json

import httpx
import pytest
from helpers import free_port, open_session, steps

from trajforge.client import IngestClient, ServiceUnreachable, contributor_id_for


def test_envelopes_wait_in_the_spool_while_offline_and_drain_in_order(serve_url, tmp_path):
    spool = tmp_path / "spool.db"
    with IngestClient(serve_url, spool_path=spool, max_retries=0) as online:
        session = open_session(online)
    session.client = offline = IngestClient(f"http://127.0.0.1:{free_port()}", spool_path=spool, max_retries=1, backoff_base_s=0.01)
    answers = [session.send_chunk(steps(2, start=1 + 2 * i)) for i in range(3)]
    assert answers == [None, None, None]
    assert offline.spool.pending() == 3
    offline.close()

    # A new process (same spool file) with the service reachable again.
    with IngestClient(serve_url, spool_path=spool, max_retries=0) as back:
        report = back.flush()
        assert (report.delivered, report.rejected, report.pending) == (3, 0, 0)
        assert [answer["sequence"] for answer in report.answers] == [0, 1, 2]
        assert all("gap" not in answer for answer in report.answers)


def test_opening_a_session_with_no_service_names_the_url_and_what_to_do(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    with IngestClient(url, spool_path=tmp_path / "spool.db", max_retries=1, backoff_base_s=0.01) as client:
        with pytest.raises(ServiceUnreachable, match="trajforge serve") as caught:
            client.open_session(provider="codex", model="o3", contributor_id=contributor_id_for("alice"))
        assert url in str(caught.value)
        assert isinstance(caught.value, httpx.TransportError)  # callers catching httpx's errors still do
        assert client.spool.pending() == 0


def test_a_permanently_refused_envelope_is_set_aside_and_does_not_block(serve_url, tmp_path):
    with IngestClient(serve_url, spool_path=tmp_path / "spool.db", max_retries=0) as client:
        session = open_session(client)
        good = session.chunk(steps(1))
        forged = json.loads(session.chunk(steps(1, start=2)))
        forged["trajectory_log"][0]["content"] = "forged"
        client.spool.put(session.session_id, good)
        client.spool.put(session.session_id, json.dumps(forged).encode())
        client.spool.put(session.session_id, session.chunk(steps(1, start=3)))
        report = client.flush()
        assert (report.delivered, report.rejected, report.pending) == (2, 1, 0)
        [refused] = client.spool.rejections()
        assert refused["status"] == 401 and refused["answer"]["error"] == "invalid_signature"


def test_flush_uses_the_batch_endpoint_for_many(serve_url, tmp_path):
    with IngestClient(serve_url, spool_path=tmp_path / "spool.db", max_retries=0, batch_size=50) as client:
        session = open_session(client)
        for i in range(120):
            client.spool.put(session.session_id, session.chunk(steps(1, start=i + 1)))
        report = client.flush()
        assert report.delivered == 120 and report.pending == 0
        assert client.get("/v1/stats/summary")["totalEnvelopes"] >= 120


def _large_chunks(session, count: int) -> list[bytes]:
    """`count` valid chunks of about 2.2 MB each: two fit in one 5 MiB request, three do not."""
    chunks = []
    for n in range(count):
        big = steps(240, start=1 + 240 * n)
        for step in big:
            step["content"] = step["content"].ljust(9000, "x")
        chunks.append(session.chunk(big))
    return chunks


def test_envelopes_too_large_together_for_one_request_are_sent_in_batches_that_fit(serve_url, tmp_path):
    with IngestClient(serve_url, spool_path=tmp_path / "spool.db", max_retries=0) as client:
        session = open_session(client)
        for chunk in _large_chunks(session, 3):
            client.spool.put(session.session_id, chunk)
        report = client.flush()
    assert (report.delivered, report.rejected, report.pending) == (3, 0, 0)
    assert [answer["sequence"] for answer in report.answers] == [0, 1, 2]


def test_a_batch_the_service_finds_too_large_is_halved_not_refused(serve_url, tmp_path):
    # A client told the service takes 64 MiB: the 6.6 MB batch gets 413, and the envelopes go again in halves.
    with IngestClient(serve_url, spool_path=tmp_path / "spool.db", max_retries=0, max_body_bytes=64 << 20) as client:
        session = open_session(client)
        for chunk in _large_chunks(session, 3):
            client.spool.put(session.session_id, chunk)
        report = client.flush()
        assert client.spool.rejections() == []
    assert (report.delivered, report.rejected, report.pending) == (3, 0, 0)
    assert [answer["sequence"] for answer in report.answers] == [0, 1, 2]
