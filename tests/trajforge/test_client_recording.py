"""The client SDK's chunk and queue policy against the real ingest service: steps recorded one at a time go as a CHUNK
every `chunk_size` (CHUNK_SIZE, 200) or when the first is `chunk_timeout_s` old (CHUNK_TIMEOUT_MS, 5 min), close
sends the rest first, a bad step is refused alone, and a spool holding `max_queue_size` envelopes (MAX_QUEUE_SIZE,
10,000) refuses more with an error saying what to do, dropping nothing it holds."""

from __future__ import annotations

import datetime
import logging
import time

import pytest
from helpers import free_port, open_session, steps

from trajforge import constants as c
from trajforge.client import IngestClient, QueueFull
from trajforge.contracts.envelope import EnvelopeRejected
from trajforge.spool import Spool, SpoolFull


@pytest.fixture
def recorder_clock(monkeypatch):
    """The clock of the chunk timeout: `recorder_clock[0] += 301` ages the buffered steps past 5 minutes."""
    now = [5000.0]
    monkeypatch.setattr("trajforge.client.recorder.now", lambda: now[0])
    return now


def step(kind: str = "action", **fields) -> dict:
    return {"type": kind, "content": f"{kind}: did a thing", "token_count": 12, **fields}


def test_the_defaults_are_the_specifications_client_constants():
    assert (c.CHUNK_SIZE, c.CHUNK_TIMEOUT_MS, c.MAX_QUEUE_SIZE) == (200, 300_000, 10_000)
    with IngestClient("http://ingest.test") as client:
        assert (client.chunk_size, client.chunk_timeout_s, client.outbox.max_queue_size) == (200, 300.0, 10_000)


def test_recorded_steps_go_every_chunk_size_and_close_sends_the_rest_first(serve_url):
    with IngestClient(serve_url, max_retries=0) as client:
        session = open_session(client)
        sent = [(n, answer) for n in range(1, 451) if (answer := session.record(step())) is not None]
        assert [(n, answer["status"], answer["sequence"]) for n, answer in sent] == [(200, 200, 0), (400, 200, 1)]
        assert (session.buffered_steps, session.chunk_sequence) == (50, 2)
        closed = session.close({"status": "SUCCESS"})
        assert closed["status"] == 200 and closed["sequence"] == 3  # the last 50 steps went as sequence 2, before it
    assert closed["score"]["points"] == 450 * 5  # gpt-5.5: every step stored and stitched, numbered 1..450


def test_a_chunk_goes_at_the_next_record_once_its_first_step_is_chunk_timeout_old(serve_url, recorder_clock):
    with IngestClient(serve_url, max_retries=0, chunk_timer=False, chunk_timeout_s=300) as client:
        session = open_session(client)
        assert session.record(step()) is None
        recorder_clock[0] += 299
        assert session.record(step()) is None and session.buffered_steps == 2
        recorder_clock[0] += 1
        answer = session.record(step())  # the first step is 300 s old: all three go
        assert answer["status"] == 200 and session.buffered_steps == 0
        recorder_clock[0] += 1000
        assert session.record(step()) is None  # a new chunk's clock starts at its first step
        recorder_clock[0] += 300
        assert session.flush_if_due()["status"] == 200  # what the background timer calls
        assert session.close({"status": "SUCCESS"})["score"]["points"] == 4 * 5


def test_the_background_timer_sends_an_idle_sessions_steps(serve_url):
    with IngestClient(serve_url, max_retries=0, chunk_timeout_s=0.3) as client:
        session = open_session(client)
        for _ in range(3):
            session.record(step())
        deadline = time.monotonic() + 15
        while (session.buffered_steps or client.spool.pending()) and time.monotonic() < deadline:  # no record, flush or close
            time.sleep(0.05)
        assert session.buffered_steps == 0 and client.spool.pending() == 0
        assert session.close({"status": "SUCCESS"})["score"]["points"] == 3 * 5


def test_a_bad_step_is_refused_alone_naming_its_field_and_the_rest_go(serve_url):
    with IngestClient(serve_url, max_retries=0) as client:
        session = open_session(client)
        session.record(step("thought"))
        with pytest.raises(EnvelopeRejected, match=r"^content: at most 10000 characters allowed.*step 2 not recorded") as long:
            session.record(step(content="x" * 10_001))
        assert long.value.field == "content"
        with pytest.raises(EnvelopeRejected, match="^type: ") as kind:
            session.record(step("musing"))
        assert kind.value.field == "type"
        with pytest.raises(EnvelopeRejected, match="datetime cannot be written as JSON"):
            session.record(step(arguments={"when": datetime.datetime.now()}))
        with pytest.raises(EnvelopeRejected, match="more than one envelope has room for"):
            session.record(step(arguments={"blob": "y" * c.MAX_BODY_BYTES}))
        session.record(step("observation", step=7, timestamp=time.time() - 5))  # its own number and time are kept
        session.record(step())  # numbered after the highest so far: 8
        assert session.buffered_steps == 3
        closed = session.close({"status": "SUCCESS"})
        with pytest.raises(RuntimeError, match="is closed: open a new session"):
            session.record(step())
        assert client.spool.rejections() == []
    assert closed["score"]["points"] == 3 * 5


def test_the_client_close_sends_the_steps_its_open_sessions_buffered(serve_url):
    client = IngestClient(serve_url, max_retries=0)
    session = open_session(client)
    for _ in range(3):
        session.record(step())
    client.close()  # the session stays open: its steps go as a chunk
    with IngestClient(serve_url, max_retries=0) as again:
        session.client = again
        assert session.close({"status": "SUCCESS"})["score"]["points"] == 3 * 5


def test_a_full_spool_refuses_more_envelopes_and_keeps_what_it_holds(serve_url, tmp_path, caplog):
    spool = tmp_path / "spool.db"
    with IngestClient(serve_url, spool_path=spool, max_retries=0) as online:
        session = open_session(online)
    offline = IngestClient(f"http://127.0.0.1:{free_port()}", spool_path=spool, max_retries=1, backoff_base_s=0.01,
                           max_queue_size=3, chunk_size=2, chunk_timer=False)
    session.client, session.chunk_size = offline, 2
    assert [session.send_chunk(steps(1, start=n)) for n in (1, 2, 3)] == [None, None, None]  # the service is down
    with pytest.raises(QueueFull) as full:
        session.send_chunk(steps(1, start=4))
    message = str(full.value)
    assert "holds 3 envelopes" in message and "max_queue_size=3" in message and "client.flush()" in message
    assert "nothing already spooled was dropped" in message
    assert (offline.spool.pending(), session.sequence) == (3, 3)  # the refused envelope gave its sequence back

    assert session.record(step(step=4)) is None  # buffered: no chunk due yet
    with pytest.raises(QueueFull):
        session.record(step(step=5))  # a chunk is due but the spool is full: this step is not recorded
    assert (session.buffered_steps, session.sequence, offline.spool.pending()) == (1, 3, 3)
    with caplog.at_level(logging.ERROR, logger="trajforge.client"):
        offline.close()  # its session's buffered step cannot be spooled: said, and kept in the session
    assert "1 recorded steps of" in caplog.text and session.buffered_steps == 1

    with IngestClient(serve_url, spool_path=spool, max_retries=0) as back:
        session.client = back
        report = back.flush()
        assert (report.delivered, report.pending) == (3, 0)
        answer = session.record(step(step=5))  # recorded again: the chunk of steps 4 and 5 goes
        assert answer["status"] == 200 and answer["sequence"] == 3 and "gap" not in answer
        closed = session.close({"status": "SUCCESS"})
    assert closed["score"]["points"] == 5 * 5


def test_a_spool_with_a_capacity_takes_a_set_of_envelopes_whole_or_not_at_all(tmp_path):
    spool = Spool(tmp_path / "spool.db")
    try:
        spool.put_many("s", [b"1", b"2"], capacity=3)
        with pytest.raises(SpoolFull, match="holds 2 envelopes of at most 3: 2 more not spooled"):
            spool.put_many("s", [b"3", b"4"], capacity=3)
        assert spool.pending() == 2
        spool.put_many("s", [b"3"], capacity=3)
        assert [item.body for item in spool.head(10)] == [b"1", b"2", b"3"]
    finally:
        spool.close()


@pytest.mark.parametrize(("options", "named"), [
    ({"chunk_size": 0}, "chunk_size"), ({"chunk_timeout_s": 0}, "chunk_timeout_s"), ({"max_queue_size": 0}, "max_queue_size"),
])
def test_the_chunk_and_queue_limits_are_checked(options, named):
    with pytest.raises(ValueError, match=f"^{named} must be"):
        IngestClient("http://ingest.test", **options)
