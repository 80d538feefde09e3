"""The client SDK against the real ingest service: steps past one envelope's limits go in several envelopes, one
unreadable envelope in the spool is set aside alone, and a session used from several threads keeps its order."""

from __future__ import annotations

import sys
import threading

from helpers import open_session, steps

from trajforge.client import IngestClient


def test_more_steps_than_one_envelope_takes_go_in_several_in_order_and_all_count(serve_url):
    with IngestClient(serve_url, max_retries=0) as client:
        session = open_session(client)
        answer = session.send_chunk(steps(1200))  # the schema's cap is 500 steps an envelope
        assert answer["status"] == 200 and answer["sequence"] == 2
        assert (session.sequence, session.chunk_sequence) == (3, 3)
        closed = session.close({"status": "SUCCESS"})
    assert closed["status"] == 200 and closed["score"]["points"] == 1200 * 5  # gpt-5.5: every step was stored and stitched


def test_steps_past_the_body_limit_go_in_envelopes_that_fit_it(serve_url):
    wide = steps(300)
    for step in wide:
        step["content"] = "é" * 10_000  # 10,000 characters (the schema's cap), 20,000 bytes: 6 MB in all, past the 5 MiB
    with IngestClient(serve_url, max_retries=0) as client:
        session = open_session(client)
        answer = session.send_chunk(wide)
        assert answer["status"] == 200 and session.sequence == 2
        assert client.spool.rejections() == []
        closed = session.close({"status": "SUCCESS"})
    assert closed["score"]["points"] == 300 * 5


def test_one_unreadable_envelope_in_the_spool_is_set_aside_alone(serve_url, tmp_path):
    with IngestClient(serve_url, spool_path=tmp_path / "spool.db", max_retries=0) as client:
        session = open_session(client)
        for n in range(6):
            client.spool.put(session.session_id, session.chunk(steps(1, start=n + 1)))
            if n == 3:
                client.spool.put(session.session_id, b'{"session_id": "torn')  # the service answers the whole batch 400
        report = client.flush()
        assert (report.delivered, report.rejected, report.pending) == (6, 1, 0)
        [refused] = client.spool.rejections()
        assert refused["status"] == 400
        assert [answer["sequence"] for answer in report.answers if answer["status"] == 200] == [0, 1, 2, 3, 4, 5]


def test_a_session_sending_from_several_threads_keeps_its_sequences_in_order(serve_url):
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: a race shows at once
    try:
        with IngestClient(serve_url, max_retries=0) as client:
            session = open_session(client)
            answers: list[dict | None] = []

            def agent(worker: int) -> None:
                for n in range(10):
                    answers.append(session.send_chunk(steps(1, start=1 + worker * 10 + n)))

            threads = [threading.Thread(target=agent, args=(worker,)) for worker in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            client.flush()
            assert client.spool.rejections() == []  # none signed before another yet spooled after it (409: stale sequence)
            closed = session.close({"status": "SUCCESS"})
    finally:
        sys.setswitchinterval(interval)
    assert closed["score"]["points"] == 80 * 5
    assert all(answer is not None for answer in answers)  # every send hears its answer, whichever thread delivered it
    assert [answer["status"] for answer in answers] == [200] * 80
    assert sorted(answer["sequence"] for answer in answers) == list(range(80))


def test_a_signed_body_is_the_envelope_with_its_attestation_last_as_javascript_writes_it():
    from trajforge import crypto
    from trajforge.client import Session
    from trajforge.jsjson import js_stringify

    session = Session(None, "sess_x", crypto.generate_keypair()[1], "0" * 32, "a" * 64, "codex", "o3")
    for unsigned in ({"session_id": "sess_x", "n": 1e-7, "s": "é\u2028"}, {"1": "index keys first", "b": [0.1 + 0.2]}, {}):
        body = session.sign(unsigned, 7)
        signature = crypto.sign_envelope(session.shared_secret, js_stringify(unsigned), 7)
        assert body == js_stringify({**unsigned, "attestation": {"session_hmac": signature, "sequence": 7, "app_version_hash": "a" * 64}})
