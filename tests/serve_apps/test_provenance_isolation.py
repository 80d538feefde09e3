"""The provenance API (seed 003) against a hostile customer: with admin keys set, a user token of one customer reads,
changes and deletes nothing of another, and cannot give itself more than it has."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import in_process_ingest

from serve_apps.ingest.settings import IngestSettings
from trajforge.contracts.event_signing import new_signing_key, sign_request

ADMIN = "admin-key-for-isolation-tests"


@pytest.fixture
def http(tmp_path: Path):
    with in_process_ingest(IngestSettings(lake=tmp_path / "lake", key_file=tmp_path / "test.key", provenance={"admin_keys": [ADMIN]})) as client:
        yield client


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def token(http, customer: str, credential: str = ADMIN, **extra) -> dict:
    made = http.post("/v1/tokens", json={"customer_id": customer, "name": "n", **extra}, headers=auth(credential))
    assert made.status_code == 201, made.text
    return made.json()


def action(commit: str = "abc123", **fields) -> dict:
    return {"event_type": "agent_action", "actor_type": "agent", "actor_id": "kilo", "tool": "edit", "intent": "fix",
            "files_written": ["src/auth.ts"], "repo": "shared-name", "commit": commit, **fields}


def test_a_user_token_reaches_nothing_of_another_customer(http):
    alice, bob = token(http, "alice"), token(http, "bob")
    bob_event = http.post("/v1/events", json=action(), headers=auth(bob["token"])).json()["event_id"]
    as_alice = auth(alice["token"])
    assert http.get("/v1/provenance/by-commit/abc123", headers=as_alice).json()["events"] == []
    assert http.get("/v1/provenance/by-file", params={"path": "src/auth.ts", "repo": "shared-name"}, headers=as_alice).json()["events"] == []
    assert http.get("/v1/events/search", params={"repo": "shared-name"}, headers=as_alice).json()["events"] == []
    for path in ("/v1/events/search", "/v1/provenance/by-commit/abc123"):
        assert http.get(path, params={"customer_id": "bob"}, headers=as_alice).status_code == 403
    outcome = {"event_type": "outcome", "original_event_id": bob_event, "status": "rejected"}
    assert http.post("/v1/events", json=outcome, headers=as_alice).status_code == 404
    assert http.post("/v1/events", params={"customer_id": "bob"}, json=action(), headers=as_alice).status_code == 403
    assert http.delete(f"/v1/tokens/{bob['id']}", headers=as_alice).status_code == 403
    assert http.get(f"/v1/users/{bob['id']}/profile", headers=as_alice).status_code == 403
    assert http.patch(f"/v1/users/{alice['id']}/role", json={"role": "admin"}, headers=as_alice).status_code == 403
    assert http.post("/v1/tokens", json={"customer_id": "bob", "name": "x"}, headers=as_alice).status_code == 403
    assert http.get("/v1/users", headers=as_alice).status_code == 403
    assert http.get("/v1/tokens", headers=as_alice).status_code == 403
    # bob's token and event are untouched
    assert [event["event_id"] for event in http.get("/v1/events/search", headers=auth(bob["token"])).json()["events"]] == [bob_event]
    assert http.get("/v1/provenance/by-commit/abc123", headers=auth(bob["token"])).json()["events"][0]["outcomes"] == []


def test_a_revoked_token_is_refused_at_once_and_cannot_be_brought_back(http):
    alice = token(http, "alice")
    assert http.delete(f"/v1/tokens/{alice['id']}", headers=auth(alice["token"])).status_code == 200
    assert http.get("/v1/me", headers=auth(alice["token"])).status_code == 401
    assert http.post("/v1/tokens", json={"customer_id": "alice", "name": "again"}, headers=auth(alice["token"])).status_code == 401


def test_a_token_whose_events_must_be_signed_cannot_make_one_that_takes_unsigned_events(http):
    """Seed 003's event signing, "for high-trust environments", is what stops a leaked bearer token alone from writing
    events: the token could make a token of its customer without a signing key (or with a key of its own) and write
    unsigned events with that one."""
    private, public = new_signing_key()
    signed = token(http, "alice", signing_key=public)
    as_signed = auth(signed["token"])
    assert http.post("/v1/events", json=action(), headers=as_signed).status_code == 401
    _, other_key = new_signing_key()
    for extra in ({}, {"signing_key": other_key}):
        refused = http.post("/v1/tokens", json={"customer_id": "alice", "name": "laptop", **extra}, headers=as_signed)
        assert refused.status_code == 403 and "signing_key" in refused.json()["message"], refused.text
    same = http.post("/v1/tokens", json={"customer_id": "alice", "name": "laptop", "signing_key": public}, headers=as_signed)
    assert same.status_code == 201 and same.json()["signed_events"] is True
    body = json.dumps(action()).encode()
    assert http.post("/v1/events", content=body, headers={**auth(same.json()["token"]), **sign_request(private, body)}).status_code == 201
    assert http.post("/v1/events", json=action(), headers=auth(same.json()["token"])).status_code == 401
    assert [event["event_type"] for event in http.get("/v1/events/search", headers=as_signed).json()["events"]] == ["agent_action"]
