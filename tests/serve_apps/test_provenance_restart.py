"""The provenance API on a private ingest app deployed in the session's Serve (with admin keys): token creation
under an admin key, and answers that survive a restart of the app, lines the index never saw included."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest

from serve_apps.ingest.provenance_store import ProvenanceStore
from trajforge.contracts.provenance import parse_provenance
from trajforge.lake import Lake

ADMIN = "admin-bootstrap-key"
NAME = "prov-private"
NO_LIMITS = {"per_address_per_minute": 0, "per_address_per_hour": 0, "sessions_per_machine_per_hour": 0, "envelopes_per_session": 0}


@pytest.fixture
def private(serve_url, tmp_path):
    """(client, deploy): the app at /prov-private over a lake of its own; deploy() (re)starts it."""
    from ray import serve

    from serve_apps.ingest.app import build_app

    def deploy():
        serve.run(build_app({"lake": str(tmp_path / "lake"), "rate_limits": NO_LIMITS, "num_cpus": 0.05, "embed_app": None,
                             "provenance": {"admin_keys": [ADMIN]}}), name=NAME, route_prefix=f"/{NAME}")

    deploy()
    try:
        with httpx.Client(base_url=f"{serve_url}/{NAME}", timeout=60) as client:
            yield client, deploy, tmp_path / "lake"
    finally:
        serve.delete(NAME)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_admin_keys_gate_token_creation_and_answers_survive_a_restart(private):
    from ray import serve

    http, deploy, lake = private
    body = {"customer_id": "acme", "name": "CLI"}
    assert http.post("/v1/tokens", json=body).status_code == 401  # no credential once admin keys are set
    assert http.post("/v1/tokens", json=body, headers=auth("wrong-key")).status_code == 401
    admin = http.post("/v1/tokens", json={**body, "role": "admin"}, headers=auth(ADMIN)).json()
    user = http.post("/v1/tokens", json=body, headers=auth(ADMIN)).json()
    assert (admin["role"], user["role"]) == ("admin", "user") and user["created_by"] == "admin-key"
    own = http.post("/v1/tokens", json={**body, "name": "laptop"}, headers=auth(user["token"]))
    assert own.status_code == 201 and own.json()["role"] == "user"
    assert http.post("/v1/tokens", json={"customer_id": "other", "name": "x"}, headers=auth(user["token"])).status_code == 403
    assert http.get("/v1/events/search", headers=auth(ADMIN)).status_code == 403  # an admin key is of no customer
    promoted = http.patch(f"/v1/users/{own.json()['id']}/role", json={"role": "admin"}, headers=auth(admin["token"]))
    assert promoted.status_code == 200 and promoted.json()["user"]["role"] == "admin"

    event = {"event_type": "agent_action", "actor_type": "agent", "actor_id": "cursor-v1", "tool": "refactor", "intent": "x",
             "files_written": ["src/auth.ts"], "repo": "my-project", "commit": "abc123"}
    kept = http.post("/v1/events", json=event, headers=auth(user["token"])).json()["event_id"]
    http.post("/v1/events", json={"event_type": "outcome", "original_event_id": kept, "status": "accepted", "linked_commit": "def456"},
              headers=auth(user["token"]))
    # a line that reached the raw lake but not the index (a crash between the two), and a torn line after it
    [raw_file] = (lake / "raw" / "provenance").glob("customer=acme/date=*/*.jsonl")
    orphan = {"event_id": str(uuid.uuid4()), "event_type": "agent_action", "customer_id": "acme", "token_id": user["id"],
              "received_at": time.time(), "client": "x", "event": {**event, "commit": "fed789"}}
    with raw_file.open("a") as handle:
        handle.write(json.dumps(orphan) + "\n" + '{"event_id": "torn", "event_type": "agent_ac')

    serve.delete(NAME)
    deploy()
    assert http.get("/v1/me", headers=auth(user["token"])).json()["user"]["id"] == user["id"]  # tokens survive
    [event_back] = http.get("/v1/provenance/by-commit/def456", headers=auth(user["token"])).json()["events"]
    assert event_back["event_id"] == kept and event_back["outcomes"][0]["status"] == "accepted"
    assert [e["event_id"] for e in http.get("/v1/provenance/by-commit/fed789", headers=auth(user["token"])).json()["events"]] == [orphan["event_id"]]
    by_file = http.get("/v1/provenance/by-file", params={"path": "src/auth.ts", "repo": "my-project"}, headers=auth(user["token"])).json()
    assert {e["event_id"] for e in by_file["events"]} == {kept, orphan["event_id"]}
    users = http.get("/v1/users", headers=auth(admin["token"])).json()["users"]
    assert {u["id"]: u["total_events"] for u in users}[user["id"]] == 3


def test_a_line_the_index_missed_is_indexed_before_the_next_append_to_its_file(tmp_path):
    lake = Lake.at(tmp_path)
    store = ProvenanceStore(lake, "w1")
    event = {"event_type": "agent_action", "actor_type": "agent", "actor_id": "a", "tool": "t", "intent": "i", "repo": "r", "commit": "c1"}
    store.store([(parse_provenance(event), event)], "acme", None, "client")
    [path] = lake.raw_provenance.glob("customer=acme/date=*/w1.jsonl")
    missed = {"event_id": "missed-1", "event_type": "agent_action", "customer_id": "acme", "token_id": None, "received_at": time.time(),
              "client": "x", "event": {**event, "commit": "c2"}}
    with path.open("a") as handle:
        handle.write(json.dumps(missed) + "\n")
    assert store.by_commit("acme", "c2") == []
    store.store([(parse_provenance(event), event)], "acme", None, "client")
    assert [e["event_id"] for e in store.by_commit("acme", "c2")] == ["missed-1"]
    assert len(store.by_commit("acme", "c1")) == 2 and store.recover() == 0  # nothing indexed twice
    store.close()


def test_a_registry_made_before_event_signing_gets_its_column_and_keeps_its_tokens(tmp_path):
    import sqlite3

    from serve_apps.ingest.tokens import TokenStore, token_hash
    from trajforge.contracts.event_signing import new_signing_key

    lake = Lake.at(tmp_path / "lake")
    lake.provenance_db.parent.mkdir(parents=True)
    with sqlite3.connect(lake.provenance_db) as old:  # the tokens table as it was before signing_key
        old.execute("CREATE TABLE tokens (token_id TEXT PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE, customer_id TEXT NOT NULL, "
                    "name TEXT NOT NULL, role TEXT NOT NULL, created_at REAL NOT NULL, created_by TEXT NOT NULL, revoked_at REAL)")
        old.execute("INSERT INTO tokens VALUES ('tok_old', ?, 'acme', 'CLI', 'admin', 1.0, 'open', NULL)", (token_hash("sk_old"),))
    store = TokenStore(lake)
    try:
        who = store.principal("sk_old")
        assert (who.token_id, who.customer_id, who.signing_key) == ("tok_old", "acme", None)
        _, public = new_signing_key()
        token, row = store.create("acme", "signer", "user", "tok_old", public)
        assert row["signed_events"] is True and store.principal(token).signing_key == public
    finally:
        store.close()
