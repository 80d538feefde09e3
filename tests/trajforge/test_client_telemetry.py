"""The telemetry SDK (seed 000's Telemetry SDK) against the real ingest service: events checked with the service's
contract, redacted before they are spooled, spooled durably (surviving a restart while the service is down), flushed
in batches, duplicates recognised, one bad event refused alone, a wrong key keeping everything, a full spool refusing
more, and a background flush."""

from __future__ import annotations

import json
import logging
import time
import uuid

import pytest
from helpers import EVENTS_KEY, free_port

from trajforge.client import EventRejected, IngestError, QueueFull, TelemetryClient
from trajforge.client.telemetry import QUEUE

KEY = "AKIA4KXZ7QF3N2WD8PLM"


def stored(lakes, org: str) -> dict[str, dict]:
    """The raw lake's records of one organisation's events, by event id."""
    found = {}
    for path in (lakes["main"] / "raw" / "events" / f"org={org}").rglob("*.jsonl"):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            found[record["event_id"]] = record
    return found


def turn(number: int) -> dict:
    return {"user_message": f"question {number}", "assistant_message": f"answer {number}", "tool_results": [{"tool": "read_file", "ok": True}]}


@pytest.fixture
def org() -> str:
    return f"org-{uuid.uuid4().hex[:8]}"


def test_events_are_redacted_before_the_spool_then_flushed_and_a_resend_is_a_duplicate(serve_url, lakes, tmp_path, org):
    with TelemetryClient(serve_url, org_id=org, api_key=EVENTS_KEY, spool_path=tmp_path / "events.db", max_retries=0) as telemetry:
        secret = telemetry.emit("conversation.turn", {"user_message": f"deploy with {KEY}, mail ops@example.com", "assistant_message": "ok"},
                                session_id="s-1")
        others = [telemetry.emit("conversation.turn", turn(n), session_id="s-1") for n in range(2)]
        error = telemetry.emit("model.error", {"message": "context window exceeded"}, session_id="s-1", model="gpt-5.5")
        spooled = b"".join(item.body for item in telemetry.spool.head(10))
        assert KEY.encode() not in spooled and b"[REDACTED:AWS_ACCESS_KEY]" in spooled and b"[REDACTED:EMAIL]" in spooled
        assert telemetry.pending() == 4
        first = telemetry.flush()
        assert (first.accepted, first.duplicates, first.pending) == (4, 0, 0)
        assert telemetry.flush() == type(first)()  # nothing left to send
        telemetry.record({"event_id": others[0], "event_type": "conversation.turn", "payload": turn(0)})  # a resend
        assert telemetry.flush().duplicates == 1
    lake = stored(lakes, org)
    assert set(lake) == {secret, *others, error}
    assert lake[secret]["event"]["payload"]["user_message"] == "deploy with [REDACTED:AWS_ACCESS_KEY], mail [REDACTED:EMAIL]"
    assert lake[error]["event"]["model"] == "gpt-5.5" and lake[error]["session_id"] == "s-1"
    assert lake[secret]["event"]["timestamp"].endswith("Z")


def test_an_event_the_service_would_refuse_is_refused_at_once_naming_the_field(tmp_path):
    with TelemetryClient("http://ingest.test", spool_path=tmp_path / "events.db") as telemetry:
        with pytest.raises(EventRejected, match="^event_type: ") as caught:
            telemetry.emit("conversation.tunr", turn(1))
        assert caught.value.field == "event_type"
        with pytest.raises(EventRejected, match="^payload: "):
            telemetry.record({"event_type": "model.error", "payload": "not an object"})
        with pytest.raises(EventRejected, match="cannot be written as JSON|not JSON serializable"):
            telemetry.emit("model.error", {"when": object()})
        with pytest.raises(EventRejected, match="^payload.user_message: .*lone UTF-16 surrogate") as lone:
            telemetry.emit("conversation.turn", {"user_message": "half an emoji \ud83d", "assistant_message": "ok"})
        assert (lone.value.field, lone.value.rule) == ("payload.user_message", "lone_surrogate")
        assert telemetry.pending() == 0
        telemetry.close(flush=False)


def test_events_wait_in_the_spool_while_the_service_is_down_and_go_after_a_restart(serve_url, lakes, tmp_path, org):
    spool = tmp_path / ".telemetry" / "events.db"
    down = TelemetryClient(f"http://127.0.0.1:{free_port()}", org_id=org, api_key=EVENTS_KEY, spool_path=spool, max_retries=1,
                           backoff_base_s=0.01)
    ids = [down.emit("session.meta", {"agent": "starcode", "n": n}, session_id="s-2") for n in range(3)]
    assert down.flush().pending == 3  # no answer: nothing lost, nothing raised
    down.close(flush=False)  # the agent exits
    with TelemetryClient(serve_url, api_key=EVENTS_KEY, spool_path=spool, max_retries=0) as again:
        assert again.pending() == 3 and again.flush().accepted == 3
    assert set(stored(lakes, org)) == set(ids)


def test_a_wrong_key_keeps_every_event_and_one_bad_event_is_set_aside_alone(serve_url, lakes, tmp_path, org):
    with TelemetryClient(serve_url, org_id=org, api_key="not-the-key", spool_path=tmp_path / "events.db", max_retries=0) as telemetry:
        good = [telemetry.emit("conversation.turn", turn(n)) for n in range(2)]
        with pytest.raises(IngestError) as refused:
            telemetry.flush()
        assert refused.value.status == 401 and telemetry.pending() == 2
        telemetry.api_key = EVENTS_KEY
        telemetry.spool.put_many(QUEUE, [b'{"event_type": "conversation.turn", "org_id": "' + org.encode() + b'", "payload": []}'])  # an older SDK's
        result = telemetry.flush()
        assert (result.accepted, result.rejected, result.pending) == (2, 1, 0)
        [rejection] = telemetry.rejections()
        assert rejection["status"] == 400 and rejection["answer"]["rejected"][0]["field"] == "payload"
    assert set(stored(lakes, org)) == set(good)


def test_a_full_spool_refuses_more_and_redaction_can_be_turned_off(tmp_path, monkeypatch, caplog):
    with TelemetryClient("http://ingest.test", spool_path=tmp_path / "events.db", max_queue_size=2) as telemetry:
        telemetry.emit("conversation.turn", turn(1))
        telemetry.emit("conversation.turn", turn(2))
        with pytest.raises(QueueFull, match="holds 2 envelopes waiting .*max_queue_size=2"):
            telemetry.emit("conversation.turn", turn(3))
        assert telemetry.pending() == 2
        telemetry.close(flush=False)
    monkeypatch.setenv("TELEMETRY_REDACT", "false")
    with caplog.at_level(logging.WARNING, logger="trajforge.client"):
        verbatim = TelemetryClient("http://ingest.test", spool_path=":memory:")
    assert "telemetry redaction is off (TELEMETRY_REDACT=false)" in caplog.text
    verbatim.emit("conversation.turn", {"user_message": KEY, "assistant_message": "ok"})
    assert KEY.encode() in verbatim.spool.head(1)[0].body
    verbatim.close(flush=False)


def test_a_background_flush_sends_what_is_emitted(serve_url, lakes, tmp_path, org):
    with TelemetryClient(serve_url, org_id=org, api_key=EVENTS_KEY, spool_path=tmp_path / "events.db", max_retries=0,
                         flush_every_s=0.2) as telemetry:
        sent = telemetry.emit("model.behavior", {"behavior": "correction"})
        deadline = time.monotonic() + 15
        while telemetry.pending() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert telemetry.pending() == 0
    assert set(stored(lakes, org)) == {sent}


def test_an_event_too_large_for_any_request_never_holds_up_the_others(serve_url, lakes, tmp_path, org):
    """Refused at emit (nothing spooled); one spooled under a larger limit than the service's is moved to the rejected
    table on its 413 and the events behind it are still delivered."""
    with TelemetryClient(serve_url, org_id=org, api_key=EVENTS_KEY, spool_path=tmp_path / "big.db", max_retries=0) as telemetry:
        with pytest.raises(EventRejected) as refused:
            telemetry.emit("model.error", {"message": "x" * telemetry.max_body_bytes})
        assert (refused.value.field, refused.value.rule) == ("payload", "too_large") and telemetry.pending() == 0
        telemetry.max_body_bytes *= 2  # as a client configured past the service's 5 MB would spool it
        too_big = telemetry.emit("model.error", {"message": "x" * (6 * 1024 * 1024)})
        small = telemetry.emit("model.error", {"message": "small"})
        result = telemetry.flush()
        assert (result.accepted, result.rejected, result.pending) == (1, 1, 0)
        assert [item["status"] for item in telemetry.rejections()] == [413]
    assert set(stored(lakes, org)) == {small} and too_big != small
