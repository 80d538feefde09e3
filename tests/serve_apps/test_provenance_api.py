"""The provenance API (seed 003, STEREOS) over real HTTP on the session's shared ingest app (`/`, open token creation):
the seed's exact requests, tokens and roles, bad bodies, outcome linking, the queries and the raw lake."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from helpers import EVENTS_KEY

SEED_ACTION = '{"event_type":"agent_action","actor_type":"agent","actor_id":"cursor-v1","tool":"refactor","intent":"refactor auth module","repo":"my-repo","commit":"abc123"}'
SEED_ACTION_FULL = ('{"event_type":"agent_action","actor_type":"agent","actor_id":"cursor-v1","tool":"refactor","intent":"refactor authentication module",'
                    '"model":"gpt-4","files_written":["src/auth.ts"],"timestamp":"2026-02-07T12:00:00Z","repo":"my-project","branch":"main","commit":"abc123"}')
JSON = {"Content-Type": "application/json"}


def make_token(http, customer: str | None = None, name: str = "CLI", **extra) -> tuple[str, dict]:
    customer = customer or f"cust-{uuid.uuid4().hex[:8]}"
    answer = http.post("/v1/tokens", content=json.dumps({"customer_id": customer, "name": name, **extra}), headers=JSON)
    assert answer.status_code == 201, answer.text
    return answer.json()["token"], answer.json()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **JSON}


def action(**fields) -> dict:
    return {"event_type": "agent_action", "actor_type": "agent", "actor_id": "kilo-1", "tool": "edit", "intent": "fix the parser",
            "repo": "r1", "commit": uuid.uuid4().hex[:12], **fields}


def post(http, token: str, body) -> dict:
    answer = http.post("/v1/events", content=json.dumps(body), headers=bearer(token))
    assert answer.status_code == 201, answer.text
    return answer.json()


def raw_lines(lake: Path, customer: str) -> list[dict]:
    return [json.loads(line) for path in sorted((lake / "raw" / "provenance").glob(f"customer={customer}/date=*/*.jsonl"))
            for line in path.read_text().splitlines()]


def test_the_seeds_requests_as_written(http, lakes):
    customer = f"seed-{uuid.uuid4().hex[:8]}"
    made = http.post("/v1/tokens", content='{"customer_id":"' + customer + '","name":"CLI"}', headers=JSON)
    assert made.status_code == 201 and made.json()["token"].startswith("sk_") and made.json()["customer_id"] == customer
    token = made.json()["token"]
    first = http.post("/v1/events", content=SEED_ACTION, headers=bearer(token))
    second = http.post("/v1/events", content=SEED_ACTION_FULL, headers=bearer(token))
    assert first.status_code == second.status_code == 201, (first.text, second.text)
    outcome = ('{\n    "event_type": "outcome",\n    "original_event_id": "' + second.json()["event_id"] + '",\n    "status": "accepted",\n'
               '    "linked_commit": "def456"\n  }')
    linked = http.post("/v1/events", content=outcome, headers=bearer(token))
    assert linked.status_code == 201 and linked.json()["outcome_id"] == linked.json()["event_id"]

    by_commit = http.get("/v1/provenance/by-commit/abc123", headers={"Authorization": f"Bearer {token}"}).json()
    assert [event["event_id"] for event in by_commit["events"]] == [first.json()["event_id"], second.json()["event_id"]]  # newest first
    full = by_commit["events"][1]
    assert (full["model"], full["files_written"], full["timestamp"], full["branch"]) == ("gpt-4", ["src/auth.ts"], "2026-02-07T12:00:00.000Z", "main")
    assert [(o["status"], o["linked_commit"]) for o in full["outcomes"]] == [("accepted", "def456")] and full["status"] == "accepted"
    assert by_commit["events"][0]["outcomes"] == [] and by_commit["events"][0]["status"] is None
    through_outcome = http.get("/v1/provenance/by-commit/def456", headers=bearer(token)).json()["events"]
    assert [(e["event_id"], e["linked_by"]) for e in through_outcome] == [(second.json()["event_id"], ["outcome"])]

    by_file = http.get("/v1/provenance/by-file?path=src/auth.ts&repo=my-project", headers=bearer(token)).json()
    assert [event["event_id"] for event in by_file["events"]] == [second.json()["event_id"]]
    search = http.get("/v1/events/search?actor_id=cursor-v1&limit=10", headers=bearer(token)).json()
    assert search["limit"] == 10 and {e["event_id"] for e in search["events"]} == {first.json()["event_id"], second.json()["event_id"]}
    assert http.get("/v1/customers/me", headers=bearer(token)).json()["customer"]["id"] == customer

    lines = raw_lines(lakes["main"], customer)  # durable before the 201, exactly as sent
    assert [line["event_id"] for line in lines] == [first.json()["event_id"], second.json()["event_id"], linked.json()["event_id"]]
    assert lines[0]["event"] == json.loads(SEED_ACTION) and lines[1]["event"] == json.loads(SEED_ACTION_FULL)


def test_a_customer_sees_its_own_events_alone(http):
    mine, _ = make_token(http)
    theirs, _ = make_token(http)
    commit = uuid.uuid4().hex
    own = post(http, mine, action(commit=commit))["event_id"]
    post(http, theirs, action(commit=commit))
    assert [e["event_id"] for e in http.get(f"/v1/provenance/by-commit/{commit}", headers=bearer(mine)).json()["events"]] == [own]
    answer = http.post("/v1/events", json={"event_type": "outcome", "original_event_id": own, "status": "rejected"}, headers=bearer(theirs))
    assert answer.status_code == 404 and answer.json()["field"] == "original_event_id"  # no outcome on another customer's event


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer sk_not-a-token"}, {"Authorization": "Basic c2tfeDp5"},
                                     {"Authorization": "Bearer"}, {"x-company-api-key": EVENTS_KEY}])
def test_provenance_without_a_valid_token_is_401(http, headers):
    for method, path, body in [("POST", "/v1/events", SEED_ACTION), ("GET", "/v1/provenance/by-commit/abc123", None),
                               ("GET", "/v1/provenance/by-file?path=src/auth.ts", None), ("GET", "/v1/events/search", None),
                               ("GET", "/v1/customers/me", None)]:
        answer = http.request(method, path, content=body, headers={**JSON, **headers})
        assert answer.status_code == 401 and answer.json()["error"] == "unauthorized" and "Bearer" in answer.json()["message"], (path, answer.text)


def test_a_revoked_token_is_401(http):
    token, made = make_token(http)
    assert http.delete(f"/v1/tokens/{made['id']}", headers=bearer(token)).json()["user"]["revoked_at"]
    assert http.get("/v1/events/search", headers=bearer(token)).status_code == 401


def test_roles_user_tokens_are_403_on_admin_endpoints(http):
    user, made = make_token(http)
    user = user if made["role"] == "user" else make_token(http, made["customer_id"])[0]  # the registry's first token is an admin
    for method, path, body in [("GET", "/v1/users", None), ("PATCH", f"/v1/users/{made['id']}/role", {"role": "admin"}),
                               ("POST", "/v1/tokens", {"customer_id": made["customer_id"], "name": "x", "role": "admin"}),
                               ("POST", "/v1/tokens", {"customer_id": "someone-else", "name": "x"}),
                               ("GET", "/v1/events/search?customer_id=someone-else", None)]:
        answer = http.request(method, path, json=body, headers=bearer(user))
        assert answer.status_code == 403 and answer.json()["error"] == "forbidden", (path, answer.text)
    anonymous_admin = http.post("/v1/tokens", json={"customer_id": "c", "name": "x", "role": "admin"})
    assert anonymous_admin.status_code == 403


@pytest.mark.parametrize("body,field", [
    ({k: v for k, v in action().items() if k != "actor_id"}, "actor_id"),
    (action(timestamp="yesterday"), "timestamp"),
    (action(files_written="src/auth.ts"), "files_written"),
    (action(commit=""), "commit"),
    ({"event_type": "outcome", "original_event_id": str(uuid.uuid4()), "status": "maybe"}, "status"),
    ({"event_type": "outcome", "original_event_id": "event-uuid-here", "status": "accepted", "linked_commit": "def456"}, "original_event_id"),
    ({"event_type": "outcome", "status": "accepted"}, "original_event_id"),
    ([action(), {"event_type": "session.meta", "org_id": "o"}], "event_type"),
])
def test_a_bad_event_is_400_naming_its_field_and_nothing_is_stored(http, lakes, body, field):
    token, made = make_token(http)
    answer = http.post("/v1/events", content=json.dumps(body), headers=bearer(token))
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_event" and answer.json()["field"] == field, answer.text
    assert raw_lines(lakes["main"], made["customer_id"]) == []
    assert http.get("/v1/events/search", headers=bearer(token)).json()["events"] == []


def test_outcomes_link_and_unknown_ones_are_404(http):
    token, _ = make_token(http)
    commit, landed = uuid.uuid4().hex, uuid.uuid4().hex
    original = post(http, token, action(commit=commit))["event_id"]
    missing = http.post("/v1/events", json={"event_type": "outcome", "original_event_id": str(uuid.uuid4()), "status": "accepted"}, headers=bearer(token))
    assert missing.status_code == 404 and missing.json()["error"] == "unknown_event"
    post(http, token, {"event_type": "outcome", "original_event_id": original, "status": "superseded"})
    post(http, token, {"event_type": "outcome", "original_event_id": original, "status": "accepted", "linked_commit": landed})
    [event] = http.get(f"/v1/provenance/by-commit/{landed}", headers=bearer(token)).json()["events"]
    assert event["event_id"] == original and [o["status"] for o in event["outcomes"]] == ["superseded", "accepted"] and event["status"] == "accepted"
    empty = http.get(f"/v1/provenance/by-commit/{uuid.uuid4().hex}", headers=bearer(token))
    assert empty.status_code == 200 and empty.json()["events"] == []


def test_a_batch_may_carry_an_action_and_its_outcome(http):
    token, _ = make_token(http)
    commit = uuid.uuid4().hex
    first = post(http, token, {"events": [action(commit=commit)]})
    answer = post(http, token, [action(commit=commit), {"event_type": "outcome", "original_event_id": first["event_ids"][0], "status": "rejected"}])
    assert answer["accepted"] == 2 and len(set(answer["event_ids"])) == 2
    assert len(http.get(f"/v1/provenance/by-commit/{commit}", headers=bearer(token)).json()["events"]) == 2


def test_by_file_filters_by_repo_and_needs_a_path(http):
    token, _ = make_token(http)
    a = post(http, token, action(repo="web", files_written=["src/app.py", "README.md"]))["event_id"]
    b = post(http, token, action(repo="api", files_written=["src/app.py"]))["event_id"]
    ids = lambda query: [e["event_id"] for e in http.get(f"/v1/provenance/by-file?{query}", headers=bearer(token)).json()["events"]]
    assert ids("path=src/app.py") == [b, a] and ids("path=src/app.py&repo=web") == [a] and ids("path=src/other.py") == []
    missing = http.get("/v1/provenance/by-file?repo=web", headers=bearer(token))
    assert missing.status_code == 400 and missing.json()["field"] == "path"


def test_search_filters_and_limits(http):
    token, _ = make_token(http)
    ids = [post(http, token, action(tool="edit" if i % 2 else "refactor", timestamp=f"2026-03-0{i + 1}T00:00:00Z"))["event_id"] for i in range(5)]
    outcome = post(http, token, {"event_type": "outcome", "original_event_id": ids[0], "status": "accepted"})["event_id"]
    found = lambda query: [e["event_id"] for e in http.get(f"/v1/events/search?{query}", headers=bearer(token)).json()["events"]]
    assert found("actor_id=kilo-1&limit=2") == [ids[4], ids[3]] and found("actor_id=kilo-1&limit=2&offset=2") == [ids[2], ids[1]]
    assert found("tool=edit") == [ids[3], ids[1]] and found("event_type=outcome") == [outcome]
    assert found("actor_id=kilo-1&since=2026-03-04T00:00:00Z") == [ids[4], ids[3]]
    assert found("actor_id=kilo-1&until=2026-03-01T12:00:00") == [ids[0]]
    capped = http.get("/v1/events/search?limit=100000", headers=bearer(token)).json()
    assert capped["limit"] == 100 and len(capped["events"]) == 6
    assert http.get("/v1/events/search?since=last-week", headers=bearer(token)).json()["field"] == "since"


def test_starcode_events_still_take_the_api_key_with_or_without_a_bearer_token(http):
    token, _ = make_token(http)
    event = {"event_id": uuid.uuid4().hex, "event_type": "conversation.turn", "org_id": f"o-{uuid.uuid4().hex[:6]}", "payload": {"user": "hi"}}
    with_both = http.post("/v1/events", json=event, headers={**bearer(token), "x-company-api-key": EVENTS_KEY})
    assert with_both.status_code == 200 and with_both.json()["accepted"] == 1
    bearer_only = http.post("/v1/events", json={**event, "event_id": uuid.uuid4().hex}, headers=bearer(token))
    assert bearer_only.status_code == 401 and "x-company-api-key" in bearer_only.json()["message"]


def test_by_commit_and_by_file_page_with_limit_and_offset(http):
    token, _ = make_token(http)
    commit = uuid.uuid4().hex
    ids = [post(http, token, action(commit=commit, files_written=["a.py"], timestamp=f"2026-04-0{i + 1}T00:00:00Z"))["event_id"] for i in range(3)]
    page = http.get(f"/v1/provenance/by-commit/{commit}?limit=2&offset=1", headers=bearer(token)).json()
    assert [e["event_id"] for e in page["events"]] == [ids[1], ids[0]] and (page["limit"], page["offset"]) == (2, 1)
    assert all(e["linked_by"] == ["commit"] for e in page["events"])
    assert [e["event_id"] for e in http.get("/v1/provenance/by-file?path=a.py&limit=1", headers=bearer(token)).json()["events"]] == [ids[2]]
    assert http.get(f"/v1/provenance/by-commit/{commit}?limit=99999", headers=bearer(token)).json()["limit"] == 1000


def test_a_commit_is_found_by_its_short_sha_as_git_abbreviates_it(http):
    token, _ = make_token(http)
    full, short_sent = uuid.uuid4().hex + uuid.uuid4().hex[:8], uuid.uuid4().hex[:7]
    at_full = post(http, token, action(commit=full))["event_id"]
    at_short = post(http, token, action(commit=short_sent))["event_id"]
    landed = post(http, token, {"event_type": "outcome", "original_event_id": at_short, "status": "accepted", "linked_commit": full})
    ids = lambda commit: [e["event_id"] for e in http.get(f"/v1/provenance/by-commit/{commit}", headers=bearer(token)).json()["events"]]
    assert ids(full[:7]) == [at_short, at_full] and ids(full[:7].upper()) == [at_short, at_full]  # git log --oneline's SHA
    assert ids(short_sent + uuid.uuid4().hex[:33]) == [at_short]  # the full SHA of an event sent with its short one
    assert ids(full[:3]) == [] and ids(short_sent[:4]) == [at_short]  # git's shortest abbreviation is 4 digits
    found = [e["event_id"] for e in http.get(f"/v1/events/search?commit={full[:10]}", headers=bearer(token)).json()["events"]]
    assert found == [landed["event_id"], at_full]  # at it, or landed in it


@pytest.mark.parametrize("body", [{**action(), "event_type": "agent-action"}, {k: v for k, v in action().items() if k != "event_type"}, {},
                                  [{**action(), "event_type": "agentAction"}], {"events": [{"actor_id": "x"}]}])
def test_a_bearer_clients_event_of_no_known_type_is_400_naming_event_type(http, body):
    token, made = make_token(http)  # the session's app takes Starcode's x-company-api-key, which this client never heard of
    answer = http.post("/v1/events", content=json.dumps(body), headers=bearer(token))
    assert answer.status_code == 400 and answer.json()["field"] == "event_type" and "agent_action" in answer.json()["message"], answer.text
    unknown = http.post("/v1/events", content=json.dumps(body), headers=bearer("sk_not-a-token"))
    assert unknown.status_code == 401 and "Bearer" in unknown.json()["message"]
    empty = http.post("/v1/events", content="[]", headers=bearer(token))
    assert empty.status_code == 400 and empty.json()["error"] == "no_events"


def test_search_since_takes_a_zone_whose_plus_the_url_left_unencoded(http):
    token, _ = make_token(http)
    ids = [post(http, token, action(timestamp=f"2026-05-0{i + 1}T00:00:00Z"))["event_id"] for i in range(3)]
    found = lambda query: [e["event_id"] for e in http.get(f"/v1/events/search?{query}", headers=bearer(token)).json()["events"]]
    assert found("since=2026-05-02T02:00:00+02:00") == [ids[2], ids[1]]  # as typed in curl: the server reads ` 02:00`
    assert found("since=2026-05-02T02:00:00%2B02:00") == found("since=2026-05-02T00:00:00Z") == [ids[2], ids[1]]
    assert found("until=2026-05-01T22:00:00-01:00") == [ids[0]]


def test_an_outcome_names_its_action_by_the_uuid_it_was_answered_with_in_any_case(http):
    token, _ = make_token(http)
    original = post(http, token, action())["event_id"]
    linked = post(http, token, {"event_type": "outcome", "original_event_id": original.upper(), "status": "rejected"})
    [event] = http.get("/v1/events/search?event_type=outcome", headers=bearer(token)).json()["events"]
    assert event["event_id"] == linked["event_id"] and event["original_event_id"] == original
    assert [o["status"] for o in http.get("/v1/events/search?event_type=agent_action", headers=bearer(token)).json()["events"][0]["outcomes"]] == ["rejected"]


def test_search_takes_start_date_and_end_date_for_since_and_until(http):
    token, _ = make_token(http)
    ids = [post(http, token, action(timestamp=f"2026-06-0{i + 1}T00:00:00Z"))["event_id"] for i in range(3)]
    found = lambda query: [e["event_id"] for e in http.get(f"/v1/events/search?{query}", headers=bearer(token)).json()["events"]]
    assert found("start_date=2026-06-02T00:00:00Z&end_date=2026-06-02T12:00:00Z") == [ids[1]]
    assert found("start_date=2026-06-02T00:00:00Z") == found("since=2026-06-02T00:00:00Z") == [ids[2], ids[1]]
    assert http.get("/v1/events/search?end_date=soon", headers=bearer(token)).json()["field"] == "end_date"


def test_no_raw_prompt_text_is_stored_by_default_only_the_contracts_fields(http, lakes):
    """Seed 003's security list: "No raw prompt text stored by default"."""
    from trajforge.contracts.provenance import parse_provenance, stored_form

    token, made = make_token(http)
    sent = action(prompt="SYSTEM: you are... USER: the whole conversation", messages=[{"role": "user", "content": "hi"}], model="gpt-4")
    event_id = post(http, token, sent)["event_id"]
    [line] = raw_lines(lakes["main"], made["customer_id"])
    assert line["event_id"] == event_id and line["event"] == {name: value for name, value in sent.items() if name not in ("prompt", "messages")}
    assert "whole conversation" not in json.dumps(line)
    assert stored_form(sent, parse_provenance(sent), keep_unknown=True) == sent  # ingest.provenance.keep_unknown_fields: true


def test_a_token_with_a_signing_key_takes_only_fresh_signed_events(http, lakes):
    """Seed 003's "optional event signing for high-trust environments": Ed25519 over the timestamp and the exact body."""
    import time

    from trajforge.contracts.event_signing import new_signing_key, sign_request

    private, public = new_signing_key()
    token, made = make_token(http, signing_key=public)
    assert made["signed_events"] is True and make_token(http)[1]["signed_events"] is False
    body = json.dumps(action()).encode()

    unsigned = http.post("/v1/events", content=body, headers=bearer(token))
    assert unsigned.status_code == 401 and unsigned.json()["field"] == "X-Stereos-Signature" and "send X-Stereos-Timestamp" in unsigned.text
    signed = sign_request(private, body)
    assert http.post("/v1/events", content=body, headers={**bearer(token), **signed}).status_code == 201
    replayed = http.post("/v1/events", content=body, headers={**bearer(token), **signed})
    assert replayed.status_code == 409 and replayed.json()["error"] == "replayed"
    tampered = http.post("/v1/events", content=body.replace(b"fix the parser", b"fix the parsers"), headers={**bearer(token), **sign_request(private, body)})
    assert tampered.status_code == 401 and "does not verify" in tampered.json()["message"]
    stale = http.post("/v1/events", content=body, headers={**bearer(token), **sign_request(private, body, now=time.time() - 3600)})
    assert stale.status_code == 401 and "from the service's clock" in stale.json()["message"]
    other, _ = new_signing_key()
    forged = http.post("/v1/events", content=body, headers={**bearer(token), **sign_request(other, body)})
    assert forged.status_code == 401
    assert len(raw_lines(lakes["main"], made["customer_id"])) == 1  # only the one signed, fresh, first request was stored

    preflight = http.options("/v1/events", headers={"Origin": "https://agent.example", "Access-Control-Request-Method": "POST"})
    assert "X-Stereos-Signature" in preflight.headers["access-control-allow-headers"]  # a browser agent may send them
    refused = http.post("/v1/tokens", content=json.dumps({"customer_id": "c", "name": "n", "signing_key": "not-a-key"}), headers=JSON)
    assert refused.status_code == 400 and "signing_key" in refused.text and "Ed25519 public key" in refused.text


def test_a_user_profile_shows_its_usage_history(http):
    """Seed 003's user profile: events generated, active days, monthly usage with its cost ($0.01 an action, $0.005 an
    outcome), the files most often modified and the recent events with their status; /v1/me shows the caller's."""
    token, made = make_token(http)
    first = post(http, token, action(files_written=["src/a.py", "src/b.py"], timestamp="2026-02-07T12:00:00Z"))["event_id"]
    post(http, token, action(files_written=["src/a.py"], timestamp="2026-02-08T09:00:00Z"))
    post(http, token, {"event_type": "outcome", "original_event_id": first, "status": "rejected"})
    other, _ = make_token(http, made["customer_id"], name="teammate")
    post(http, other, action(files_written=["src/c.py"]))  # another user's: not in this profile
    profile = http.get(f"/v1/users/{made['id']}/profile", headers=bearer(token))
    assert profile.status_code == 200, profile.text
    usage = profile.json()["usage"]
    assert (usage["total_events"], usage["agent_actions"], usage["outcomes"]) == (3, 2, 1) and profile.json()["user"]["total_events"] == 3
    assert usage["active_days"] >= 2 and usage["first_activity"] == "2026-02-07T12:00:00.000Z" and usage["total_cost_usd"] == 0.025
    assert [(m["event_count"], m["agent_actions"], m["outcomes"], m["cost_usd"]) for m in usage["monthly"]] == [(3, 2, 1, 0.025)]
    assert [(f["file_path"], f["modification_count"]) for f in usage["files"]] == [("src/a.py", 2), ("src/b.py", 1)]
    recent = {event["event_id"]: event for event in usage["recent_events"]}
    assert len(recent) == 3 and recent[first]["status"] == "rejected"
    me = http.get("/v1/me", headers=bearer(token)).json()
    assert me["user"]["id"] == made["id"] and me["usage"]["total_events"] == 3
