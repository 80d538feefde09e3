"""The ingest service over real HTTP: every acceptance and rejection path of the protocol."""

from __future__ import annotations

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from helpers import CONTRIBUTOR, open_session, post, steps

from trajforge import crypto


def test_health_answers_status_and_uptime(http):
    response = http.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert response.json()["uptime"] >= 0
    assert response.headers["access-control-allow-origin"] == "*"


def test_open_returns_a_p256_key_that_derives_the_same_secret(http):
    public_b64, private_b64 = crypto.generate_keypair()
    status, answer = post(http, "/v1/sessions/open", json.dumps({
        "session_id": f"sess_{uuid.uuid4()}", "public_key": public_b64, "provider": "codex", "model": "gpt-5.5",
        "machine_fingerprint": "f" * 64, "app_version_hash": "a" * 64, "groove_version": "0.27.113",
    }).encode())
    assert status == 200
    assert len(crypto.load_public_key(answer["server_public_key"]).public_bytes(
        __import__("cryptography.hazmat.primitives.serialization", fromlist=["Encoding"]).Encoding.X962,
        __import__("cryptography.hazmat.primitives.serialization", fromlist=["PublicFormat"]).PublicFormat.UncompressedPoint,
    )) == 65
    assert crypto.derive_shared_secret(private_b64, answer["server_public_key"])


@pytest.mark.parametrize("missing", ["session_id", "public_key", "provider", "model", "machine_fingerprint", "app_version_hash", "groove_version"])
def test_open_without_a_field_is_400_naming_it(http, missing):
    public_b64, _ = crypto.generate_keypair()
    request = {"session_id": f"sess_{uuid.uuid4()}", "public_key": public_b64, "provider": "codex", "model": "gpt-5.5",
               "machine_fingerprint": "f" * 64, "app_version_hash": "a" * 64, "groove_version": "0.27.113"}
    del request[missing]
    status, answer = post(http, "/v1/sessions/open", json.dumps(request).encode())
    assert status == 400
    assert answer["field"] == missing


@pytest.mark.parametrize("envelope, rule", [({"session_id": 5}, "string_type"), ({"chunk_sequence": 0}, "missing"),
                                            ({"session_id": ""}, "missing")])
def test_an_envelope_without_a_usable_session_id_says_which_problem(http, envelope, rule):
    status, answer = post(http, "/v1/training/ingest", json.dumps(envelope).encode())
    assert status == 400 and answer["field"] == "session_id" and answer["rule"] == rule


@pytest.mark.parametrize("path", ["/v1/training/ingest", "/v1/training/ingest:batch"])
def test_a_session_id_holding_a_lone_surrogate_is_an_unknown_session_not_a_500(http, path):
    # JSON can escape one ("sess_\\ud800"); looking it up in the registry raised UnicodeEncodeError: a 500 saying "retry it"
    envelope = {"session_id": "sess_\ud800", "chunk_sequence": 0, "attestation": {"session_hmac": "a" * 64, "sequence": 0}}
    body = json.dumps(envelope if path.endswith("ingest") else [envelope]).encode()
    status, answer = post(http, path, body)
    if path.endswith(":batch"):  # one result per envelope, in a 200
        assert status == 200
        status, answer = answer["results"][0]["status"], answer["results"][0]
    assert status == 404 and answer["error"] == "unknown_session" and "'sess_\\ud800' was never opened here" in answer["message"]


def test_open_with_a_key_that_is_not_a_point_is_400(http):
    status, answer = post(http, "/v1/sessions/open", json.dumps({
        "session_id": f"sess_{uuid.uuid4()}", "public_key": "bm90IGEga2V5", "provider": "codex", "model": "gpt-5.5",
        "machine_fingerprint": "f" * 64, "app_version_hash": "a" * 64, "groove_version": "0.27.113",
    }).encode())
    assert status == 400 and answer["field"] == "public_key"


def test_reopening_a_session_id_is_409(client, http):
    session = open_session(client)
    public_b64, _ = crypto.generate_keypair()
    status, answer = post(http, "/v1/sessions/open", json.dumps({
        "session_id": session.session_id, "public_key": public_b64, "provider": "codex", "model": "gpt-5.5",
        "machine_fingerprint": "f" * 64, "app_version_hash": "a" * 64, "groove_version": "0.27.113",
    }).encode())
    assert status == 409 and answer["error"] == "session_exists"


def test_chunk_is_accepted_with_a_server_envelope_id(client):
    session = open_session(client)
    answer = session.send_chunk(steps(5))
    assert answer["status"] == 200 and answer["accepted"] is True and answer["duplicate"] is False
    assert answer["envelope_id"].startswith("env_")


def test_exact_replay_is_a_duplicate_and_stores_nothing(client, http):
    session = open_session(client)
    body = session.chunk(steps(3))
    first = post(http, "/v1/training/ingest", body)
    before = http.get("/v1/stats/summary").json()["totalEnvelopes"]
    again = post(http, "/v1/training/ingest", body)
    after = http.get("/v1/stats/summary").json()["totalEnvelopes"]
    assert first[0] == 200 and again[0] == 200
    assert again[1]["duplicate"] is True and again[1]["envelope_id"] == first[1]["envelope_id"]
    assert after == before


def test_a_changed_byte_fails_the_signature_and_keeps_the_sequence(client, http):
    session = open_session(client)
    body = session.chunk(steps(3))
    tampered = body.replace(b"did a thing", b"did a THING", 1)
    status, answer = post(http, "/v1/training/ingest", tampered)
    assert status == 401 and answer["error"] == "invalid_signature"
    status, answer = post(http, "/v1/training/ingest", body)  # the same sequence is still free
    assert status == 200 and answer["duplicate"] is False


def test_missing_attestation_is_401(client, http):
    session = open_session(client)
    envelope = json.loads(session.chunk(steps(2)))
    del envelope["attestation"]
    status, answer = post(http, "/v1/training/ingest", json.dumps(envelope).encode())
    assert status == 401 and answer["error"] == "missing_attestation"


def test_schema_rejection_names_field_and_rule_and_consumes_no_sequence(client, http):
    session = open_session(client)
    bad = steps(2)
    bad[1]["content"] = "x" * 10_001
    status, answer = post(http, "/v1/training/ingest", session.chunk(bad))
    assert status == 400
    assert answer["field"] == "trajectory_log.1.content" and answer["rule"] == "string_too_long"
    session.sequence, session.chunk_sequence = 0, 0
    assert post(http, "/v1/training/ingest", session.chunk(steps(2)))[0] == 200


def test_reused_sequence_with_other_content_is_409(client, http):
    session = open_session(client)
    assert post(http, "/v1/training/ingest", session.chunk(steps(2)))[0] == 200
    session.sequence = 0
    status, answer = post(http, "/v1/training/ingest", session.chunk(steps(2, start=10)))
    assert status == 409 and answer["error"] == "stale_sequence" and answer["last_sequence"] == 0


def test_a_sequence_gap_is_recorded_not_fatal(client, http):
    session = open_session(client)
    assert post(http, "/v1/training/ingest", session.chunk(steps(2)))[0] == 200
    session.sequence = 5
    status, answer = post(http, "/v1/training/ingest", session.chunk(steps(2, start=3)))
    assert status == 200 and answer["gap"] == {"expected": 1, "received": 5}


def test_unknown_session_is_404(http):
    envelope = {"session_id": "sess_never_opened", "chunk_sequence": 0, "contributor_id": CONTRIBUTOR,
                "attestation": {"session_hmac": "ab" * 32, "sequence": 0, "app_version_hash": "c" * 64},
                "metadata": {}, "trajectory_log": steps(1)}
    status, answer = post(http, "/v1/training/ingest", json.dumps(envelope).encode())
    assert status == 404 and answer["error"] == "unknown_session"


def test_close_scores_from_the_steps_and_credits_the_ledger(client, http):
    session = open_session(client, model="claude-opus-4-6")
    kinds = ("thought", "action", "observation", "error", "correction", "resolution")
    session.send_chunk(steps(12, kinds=kinds), {"task_complexity": "medium"})
    answer = session.close({"status": "SUCCESS", "total_steps": 9999, "errors_recovered": 500})
    # 12 steps x5 (opus) = 60; corrections min(2, 3.6)*10 = 20; recovered min(2, 2)*3 = 6 -> 86; +floor(8.6) = 94
    assert answer["score"]["points"] == 94.0
    assert answer["score"]["breakdown"]["errors_recovered"] == 2
    board = http.get("/v1/stats/leaderboard", params={"limit": 100}).json()
    assert any(row["contributor_id"] == CONTRIBUTOR[:8] for row in board)


def test_a_close_without_an_outcome_block_is_scored_from_the_steps(client):
    session = open_session(client)
    session.send_chunk(steps(6))
    unsigned = {"session_id": session.session_id, "type": "SESSION_CLOSE", "contributor_id": session.contributor_id}
    answer = client.send(session.session_id, session.sign(unsigned, session.sequence))
    assert answer["accepted"] and answer["score"]["points"] > 0


def test_a_close_whose_answer_echoes_a_lone_surrogate_answers_200_with_it_escaped(client):
    # JSON.stringify writes a lone surrogate as an escape, so a Node client's model_engine can hold one; the close was
    # stored and scored, then its answer (the score names the model) could not be encoded: a 500 saying "retry it"
    session = open_session(client)
    session.send_chunk(steps(6), {"model_engine": "gpt-5.5\ud800"})
    answer = session.close({"status": "SUCCESS"})
    assert answer["accepted"] and answer["score"]["points"] > 0 and "gpt-5.5\ud800" in json.dumps(answer, ensure_ascii=False)


def test_nothing_but_feedback_is_accepted_after_close(client, http):
    session = open_session(client)
    session.send_chunk(steps(3))
    session.close({"status": "SUCCESS"})
    status, answer = post(http, "/v1/training/ingest", session.chunk(steps(2, start=4)))
    assert status == 409 and answer["error"] == "session_closed"
    feedback = {"signal": "accepted", "timestamp": time.time(), "context": "merged", "target_step": 3, "revision_rounds": 0, "delta_summary": None}
    body = session.feedback_envelope(feedback)
    assert post(http, "/v1/training/ingest", body)[1]["duplicate"] is False
    assert post(http, "/v1/training/ingest", body)[1]["duplicate"] is True


def test_the_signed_close_is_scored_even_after_the_http_close(client, http):
    session = open_session(client)
    session.send_chunk(steps(6))
    assert post(http, "/v1/sessions/close", json.dumps({"session_id": session.session_id}).encode())[0] == 200
    assert post(http, "/v1/training/ingest", session.chunk(steps(1, start=7)))[1]["error"] == "session_closed"
    session.sequence = 1
    close = session.close_envelope({"status": "SUCCESS"})
    status, answer = post(http, "/v1/training/ingest", close)
    assert status == 200 and answer["score"]["points"] == 6 * 5
    session.sequence = 2
    status, answer = post(http, "/v1/training/ingest", session.close_envelope({"status": "CRASH"}))
    assert status == 409 and answer["error"] == "session_closed"  # only one SESSION_CLOSE per session


def test_http_close_reports_already_closed(client, http):
    session = open_session(client)
    first = post(http, "/v1/sessions/close", json.dumps({"session_id": session.session_id}).encode())
    again = post(http, "/v1/sessions/close", json.dumps({"session_id": session.session_id}).encode())
    assert first == (200, {"closed": True})
    assert again == (200, {"closed": True, "already_closed": True})
    assert post(http, "/v1/sessions/close", b'{"session_id": "sess_nobody"}')[0] == 404


@pytest.mark.parametrize("body, needle", [
    (b'{"session_id": NaN}', "NaN"),
    (b'{"session_id": "a", "x": Infinity}', "Infinity"),
    (b'{"session_id": "a", "session_id": "b"}', "duplicate"),
    (b'{"session_id": ', ""),
    (b"\xff\xfe", ""),
])
def test_json_that_javascript_would_not_produce_is_400(http, body, needle):
    status, answer = post(http, "/v1/training/ingest", body)
    assert status == 400 and answer["error"] == "malformed_json"
    assert needle in answer["message"]


def test_body_over_5_mb_is_413(http):
    status, answer = post(http, "/v1/training/ingest", b"[" + b"0," * (3 * 1024 * 1024) + b"0]")
    assert status == 413 and answer["error"] == "body_too_large"


def test_wrong_method_is_405_and_unknown_path_404_with_json(http):
    response = http.get("/v1/training/ingest")
    assert response.status_code == 405 and response.json()["error"] == "method_not_allowed"
    assert response.headers["allow"] == "POST"
    response = http.post("/v1/nothing", content=b"{}")
    assert response.status_code == 404 and response.json()["error"] == "not_found"


def test_checks_run_in_the_specifications_order(client, http):
    """Session, attestation, signature, then the schema: an unknown session is 404 and a tampered envelope 401
    whatever else is wrong with them."""
    session = open_session(client)
    envelope = json.loads(session.chunk(steps(2)))
    garbage = {"session_id": "sess_never_opened", "attestation": {"session_hmac": "0" * 64, "sequence": 0}, "trajectory_log": []}
    assert post(http, "/v1/training/ingest", json.dumps(garbage).encode())[0] == 404
    envelope["trajectory_log"][0]["content"] = "x" * 20_000  # tampered, and over the schema's 10,000 characters
    status, answer = post(http, "/v1/training/ingest", json.dumps(envelope).encode())
    assert (status, answer["error"]) == (401, "invalid_signature")


def test_batch_answers_one_result_per_envelope_in_order(client, http):
    session = open_session(client)
    good = [session.chunk(steps(2, start=1 + 2 * i)) for i in range(4)]
    bad = json.loads(good[1])
    bad["trajectory_log"][0]["type"] = "daydream"
    sequence = bad.pop("attestation")["sequence"]
    bodies = [good[0], session.sign(bad, sequence), good[2], good[0], good[3]]  # signed, so the schema is what fails
    status, answer = post(http, "/v1/training/ingest:batch", b"[" + b",\n ".join(bodies) + b"]")
    assert status == 200
    results = answer["results"]
    assert [r["index"] for r in results] == [0, 1, 2, 3, 4]
    assert [r["status"] for r in results] == [200, 400, 200, 200, 200]
    assert results[1]["field"] == "trajectory_log.0.type"
    assert results[3]["duplicate"] is True and results[3]["envelope_id"] == results[0]["envelope_id"]
    assert results[2]["gap"] == {"expected": 1, "received": 2}


def test_batch_accepts_the_envelopes_wrapper_and_refuses_more_than_500(client, http):
    session = open_session(client)
    body = b'{"envelopes": [' + session.chunk(steps(1)) + b"]}"
    status, answer = post(http, "/v1/training/ingest:batch", body)
    assert status == 200 and answer["results"][0]["status"] == 200
    status, answer = post(http, "/v1/training/ingest:batch", b"[" + b",".join([b"{}"] * 501) + b"]")
    assert status == 413 and answer["error"] == "batch_too_large"


def test_concurrent_submissions_on_one_session_never_share_a_sequence(client, http):
    session = open_session(client)
    bodies = []
    for sequence in range(8):  # four different envelopes for each of eight sequences
        for variant in range(4):
            session.sequence = sequence
            bodies.append(session.chunk(steps(1, start=100 * variant + sequence)))
    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(lambda body: post(http, "/v1/training/ingest", body), bodies))
    accepted = [json.loads(body)["attestation"]["sequence"] for body, (status, _) in zip(bodies, answers) if status == 200]
    assert len(accepted) == len(set(accepted)) >= 1
    assert all(status in (200, 409) for status, _ in answers)


def test_stats_endpoints_have_the_specified_shapes(client, http):
    session = open_session(client, model="o4-mini")
    session.send_chunk(steps(6))
    session.close({"status": "SUCCESS"})
    summary = http.get("/v1/stats/summary").json()
    assert set(summary) == {"totalEnvelopes", "totalSteps", "totalSessions", "activeSessions", "uniqueContributors", "storageSizeMb", "totalPointsAwarded"}
    assert summary["totalSteps"] >= 6 and summary["storageSizeMb"] > 0
    daily = http.get("/v1/stats/daily", params={"days": 3}).json()
    assert len(daily) == 3 and set(daily[-1]) == {"date", "envelopes", "steps", "sessions", "points"}
    assert daily[-1]["steps"] >= 6
    models = http.get("/v1/stats/models").json()
    assert models["o4-mini"]["sessions"] >= 1 and 0 < models["o4-mini"]["percentage"] <= 100
    assert "codex" in http.get("/v1/stats/providers").json()
    for odd in ("x", "-3", ""):  # parseInt(x) || 7: never an error
        assert len(http.get("/v1/stats/daily", params={"days": odd}).json()) == 7
    assert len(http.get("/v1/stats/daily", params={"days": "2abc"}).json()) == 2
    # As the Node server reads them (`parseInt(x) || default`): 0 is the default, more than the most is the most.
    assert len(http.get("/v1/stats/daily", params={"days": 0}).json()) == 7
    assert len(http.get("/v1/stats/daily", params={"days": 5000}).json()) == 366
    assert http.get("/v1/stats/leaderboard", params={"limit": 100000}).status_code == 200


@pytest.mark.parametrize("value, count", [("\u0661", 7), ("\uff12", 7), ("\x1c4", 7), ("\u200b4", 7), ("\u00a05", 5), ("\ufeff4", 4),
                                          ("\u3000\t3x", 3)])
def test_counts_are_read_with_javascripts_digits_and_white_space(value, count):
    # parseInt takes ASCII digits after JavaScript's white space: an Arabic-Indic or fullwidth digit is NaN, so the
    # default (Python's \d read them as 1 and 2); U+001C is not white space there, U+FEFF is
    from urllib.parse import quote

    from starlette.requests import Request

    from serve_apps.http import int_param

    request = Request({"type": "http", "query_string": f"days={quote(value)}".encode()})
    assert int_param(request, "days", 7, 1, 366) == count


def test_daily_stats_leave_out_rows_stamped_after_now(tmp_path):
    """A replica whose clock runs ahead stamps envelopes after another replica's `now`: no 500."""
    from serve_apps.ingest import registry
    from serve_apps.ingest.stats import Stats

    connection = registry.connect(tmp_path / "ingest.db")
    registry.create_schema(connection)
    now = time.time()
    connection.execute("PRAGMA foreign_keys=OFF")
    connection.execute("INSERT INTO envelopes (hmac, envelope_id, session_id, kind, sequence, steps, segment_id, offset, length, received_at)"
                       " VALUES ('h', 'e', 's', 'CHUNK', 1, 4, 1, 0, 10, ?)", (now + 3 * 86400,))
    daily = Stats(connection).daily(3, now=now)
    assert len(daily) == 3 and sum(row["envelopes"] for row in daily) == 0


def test_head_answers_like_get_without_a_body(http):
    head = http.head("/health")
    assert head.status_code == 200 and head.content == b"" and head.headers["content-type"] == "application/json"
    assert http.post("/health").headers["allow"] == "GET, HEAD"


def test_an_empty_groove_version_is_missing(http):
    from trajforge import crypto

    body = {"session_id": "sess_empty_version", "public_key": crypto.generate_keypair()[0], "provider": "codex", "model": "m",
            "machine_fingerprint": "f" * 64, "app_version_hash": "a" * 64, "groove_version": ""}
    answer = http.post("/v1/sessions/open", json=body)
    assert answer.status_code == 400 and answer.json()["field"] == "groove_version"
