"""`POST /v1/events`: Starcode telemetry events over HTTP, gated by `x-company-api-key`, kept as JSON lines."""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path

import pytest
from helpers import EVENTS_KEY

from serve_apps.ingest.events import EventStore, api_keys, key_accepted
from trajforge.contracts.events import parse_event
from trajforge.lake import Lake

KEY = {"x-company-api-key": EVENTS_KEY}


def turn(org: str, **extra) -> dict:
    return {"event_id": uuid.uuid4().hex, "event_type": "conversation.turn", "org_id": org, "session_id": "s-1",
            "timestamp": "2026-12-05T07:00:00.000Z", "payload": {"user": "rename fetch_user", "assistant": "done",
                                                                  "tool_results": [{"tool": "write_file", "ok": True}]}, **extra}


def stored(lake: Path, org: str) -> list[dict]:
    return [json.loads(line) for path in sorted((lake / "raw" / "events").glob(f"org={org}/date=*/type=*/*.jsonl"))
            for line in path.read_text().splitlines()]


def test_events_are_filed_by_org_date_and_type_exactly_as_sent(http, lakes):
    org = f"acme-{uuid.uuid4().hex[:6]}"
    error = {"type": "model.error", "org_id": org, "payload": {"message": "context overflow", "code": 400}, "agent_version": "0.9.1"}
    answer = http.post("/v1/events", json=[turn(org), error], headers=KEY)
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == 2 and answer.json()["duplicates"] == 0
    records = stored(lakes["main"], org)
    assert {record["event_type"] for record in records} == {"conversation.turn", "model.error"}
    sent_error = next(record for record in records if record["event_type"] == "model.error")
    assert sent_error["event"] == error  # unknown fields ride along; nothing is rewritten
    paths = {path.relative_to(lakes["main"] / "raw" / "events").parts[2] for path in (lakes["main"] / "raw" / "events").glob(f"org={org}/*/*")}
    assert paths == {"type=conversation.turn", "type=model.error"}


def test_a_resent_event_is_a_duplicate_with_or_without_an_id(http, lakes):
    org = f"dup-{uuid.uuid4().hex[:6]}"
    with_id, without_id = turn(org), {"event_type": "session.meta", "org_id": org, "payload": {"os": "linux"}}
    first = http.post("/v1/events", json={"events": [with_id, without_id]}, headers=KEY).json()
    again = http.post("/v1/events", json={"events": [with_id, without_id]}, headers=KEY).json()
    assert (first["accepted"], again["accepted"], again["duplicates"]) == (2, 0, 2)
    assert first["event_ids"] == again["event_ids"] and again["event_ids"][1].startswith("sha256:")
    assert len(stored(lakes["main"], org)) == 2


@pytest.mark.parametrize("headers", [{}, {"x-company-api-key": "wrong"}])
def test_a_missing_or_wrong_api_key_is_401_and_stores_nothing(http, lakes, headers):
    org = f"nokey-{uuid.uuid4().hex[:6]}"
    answer = http.post("/v1/events", json=turn(org), headers=headers)
    assert answer.status_code == 401 and answer.json()["error"] == "unauthorized"
    assert stored(lakes["main"], org) == []


def test_one_invalid_event_rejects_the_request_and_names_it(http, lakes):
    org = f"bad-{uuid.uuid4().hex[:6]}"
    answer = http.post("/v1/events", json=[turn(org), {"event_type": "model.daydream", "org_id": org}, "not an event"], headers=KEY)
    assert answer.status_code == 400
    body = answer.json()
    assert body["error"] == "invalid_event"
    assert [(problem["index"], problem["field"]) for problem in body["rejected"]] == [(1, "event_type"), (2, None)]
    assert stored(lakes["main"], org) == []  # the valid one was not stored either: the client resends the request whole


def test_a_lone_surrogate_is_a_400_naming_its_field_not_a_500(http, lakes):
    # JSON can carry a lone UTF-16 surrogate as an escape (JSON.stringify writes one), but no UTF-8 line can hold it:
    # writing the event failed after validation and the request was a 500
    org = f"sur-{uuid.uuid4().hex[:6]}"
    event = turn(org)
    event["payload"]["assistant"] = "half an emoji \ud83d"
    answer = http.post("/v1/events", content=json.dumps([turn(org), event]).encode(), headers={**KEY, "content-type": "application/json"})
    assert answer.status_code == 400, answer.text
    assert [(problem["index"], problem["field"], problem["rule"]) for problem in answer.json()["rejected"]] == [
        (1, "payload.assistant", "lone_surrogate")]
    keyed = {"event_type": "session.meta", "org_id": org, "payload": {"tags": {"ok": 1, "k\udc00": 2}}}
    answer = http.post("/v1/events", content=json.dumps(keyed).encode(), headers={**KEY, "content-type": "application/json"})
    assert answer.status_code == 400 and answer.json()["rejected"][0]["field"] == "payload.tags.k\\udc00", answer.text
    whole = turn(org)
    whole["payload"]["assistant"] = "a whole emoji \U0001f600 and its escaped pair"
    answer = http.post("/v1/events", content=json.dumps(whole).encode(), headers={**KEY, "content-type": "application/json"})
    assert answer.status_code == 200, answer.text
    assert [record["event"] for record in stored(lakes["main"], org)] == [whole]


@pytest.mark.parametrize("body,status", [(b"{not json", 400), (b"[]", 400), (json.dumps([{"event_type": "session.meta"}] * 1001).encode(), 413)])
def test_malformed_empty_and_oversize_requests(http, body, status):
    answer = http.post("/v1/events", content=body, headers={**KEY, "content-type": "application/json"})
    assert answer.status_code == status and answer.json()["message"]


def test_only_post(http):
    answer = http.get("/v1/events", headers=KEY)
    assert answer.status_code == 405 and answer.headers["allow"] == "POST"


def test_keys_come_from_the_config_and_the_environment():
    assert api_keys(["a"], "INGEST_API_KEYS", {"INGEST_API_KEYS": " b, c ,,"}) == ["a", "b", "c"]
    assert api_keys([], None, {"INGEST_API_KEYS": "b"}) == []
    assert key_accepted(None, []) and key_accepted("anything", [])  # no keys configured: open, as Starcode's default
    assert key_accepted("c", ["b", "c"]) and not key_accepted("d", ["b", "c"]) and not key_accepted(None, ["b"])


def test_the_keys_of_the_deploying_process_environment_reach_replicas_that_lack_it(tmp_path, monkeypatch):
    """`INGEST_API_KEYS=k trajforge serve` onto a cluster started without the variable still gates the endpoint."""
    from serve_apps.ingest.app import build
    from serve_apps.ingest.settings import load_settings

    monkeypatch.setenv("INGEST_API_KEYS", "from-env,a")
    settings = build(load_settings({"lake": str(tmp_path), "events": {"api_keys": ["a"]}}))._bound_deployment.init_args[0]
    assert api_keys(settings.events.api_keys, settings.events.api_keys_env, environ={}) == ["a", "from-env"]


def test_two_replicas_storing_the_same_events_at_once_keep_one_copy(tmp_path):
    lake = Lake.at(tmp_path).ensure()
    events = [(parse_event(raw), raw) for raw in (turn("race", n=i) for i in range(50))]
    stores = [EventStore(lake, f"replica-{n}") for n in range(2)]
    answers: list = [None, None]

    def run(n: int) -> None:
        answers[n] = stores[n].store(events, client="c")

    threads = [threading.Thread(target=run, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    fresh = [not answer.duplicate for replica in answers for answer in replica]
    assert sum(fresh) == 50
    assert len(stored(tmp_path, "race")) == 50
    for store in stores:
        store.close()


def test_the_client_sdk_sends_events_and_reports_a_refusal(serve_url):
    from trajforge.client import IngestClient, IngestError

    events = [turn(f"sdk-{uuid.uuid4().hex[:6]}") for _ in range(3)]
    with IngestClient(serve_url, max_retries=0) as client:
        assert client.send_events(events, api_key=EVENTS_KEY)["accepted"] == 3
        assert client.send_events(events, api_key=EVENTS_KEY)["duplicates"] == 3
        with pytest.raises(IngestError) as refused:
            client.send_events(events)
    assert refused.value.status == 401


def test_javascript_camel_case_names_are_read(http, lakes):
    org = f"camel-{uuid.uuid4().hex[:6]}"
    event = {"eventType": "model.behavior", "eventId": "b-1", "orgId": org, "sessionId": "s-9", "payload": {"behavior": "retry"}}
    assert http.post("/v1/events", json=event, headers=KEY).json()["event_ids"] == ["b-1"]
    (record,) = stored(lakes["main"], org)
    assert (record["event_type"], record["org_id"], record["session_id"], record["event"]) == ("model.behavior", org, "s-9", event)
