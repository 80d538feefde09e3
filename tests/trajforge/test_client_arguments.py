"""What a caller gives a Session is checked before anything is signed: a wrong type raises TypeError naming the
argument, takes no sequence, spools nothing and keeps the recorded steps buffered (it used to be signed, sent,
refused by the service and set aside, leaving a gap in the session's sequences)."""

from __future__ import annotations

import time

import pytest

from trajforge import crypto
from trajforge.client import IngestClient, Session
from trajforge.contracts.envelope import EnvelopeRejected


@pytest.fixture
def session():
    with IngestClient("http://127.0.0.1:9", max_retries=0) as client:
        yield Session(client, "sess_x", crypto.generate_keypair()[1], "0" * 32, "a" * 64, "codex", "gpt-5.5")


def _recorded(session: Session) -> None:
    session.record({"type": "thought", "content": "kept", "token_count": 1})


@pytest.mark.parametrize(("call", "says"), [
    (lambda s: s.send_chunk("mkdir -p src"), r"steps must be a list of steps, each a dict of its fields \(got str\)"),
    (lambda s: s.send_chunk({"step": 1, "type": "thought"}), r"steps must be a list of steps.*\(got dict\)"),
    (lambda s: s.send_chunk(None), r"steps must be a list of steps.*\(got NoneType\)"),
    (lambda s: s.send_chunk([{"step": 1, "type": "thought"}, "oops"]), r"steps\[1\] must be a dict of a step's fields \(got str\)"),
    (lambda s: s.send_chunk([{"step": 1, "type": "thought"}], metadata=["frontend"]), r"metadata must be a dict.*\(got list\)"),
    (lambda s: s.chunk([1, 2]), r"steps\[0\] must be a dict"),
    (lambda s: s.close("SUCCESS"), r"outcome must be a dict.*\(got str\)"),
    (lambda s: s.send_feedback("accepted"), r"feedback must be a dict.*\(got str\)"),
])
def test_a_wrong_type_takes_no_sequence_and_keeps_the_recorded_steps(session, call, says):
    _recorded(session)
    with pytest.raises(TypeError, match=says):
        call(session)
    assert (session.sequence, session.chunk_sequence, session.client.spool.pending()) == (0, 0, 0)
    assert session.buffered_steps == 1 and not session.closed


def test_steps_from_any_iterable_of_dicts_are_taken(session):
    body = session.chunk(({"step": n, "type": "thought", "timestamp": time.time()} for n in (1, 2)))
    assert b'"trajectory_log":[{"step":1' in body and session.sequence == 1


def test_a_closed_session_refuses_chunks_and_a_second_close_but_takes_feedback(session):
    session.close({"status": "SUCCESS"})  # spooled (no service at this port)
    spooled = session.client.spool.pending()
    for call in (lambda: session.send_chunk([{"step": 1, "type": "thought"}]), lambda: session.close({"status": "SUCCESS"}),
                 lambda: _recorded(session)):
        with pytest.raises(RuntimeError, match="sess_x is closed: open a new session"):
            call()
    assert (session.sequence, session.client.spool.pending()) == (1, spooled)
    session.send_feedback({"signal": "accepted", "timestamp": time.time()})
    assert session.client.spool.pending() == spooled + 1
    assert b'"chunk_sequence":0' in session.chunk([])  # the builders still build (protocol tests post them by hand)


@pytest.mark.parametrize(("outcome", "field"), [({"status": "DONE"}, "outcome.status"), ({}, "outcome.status"),
                                                ({"status": "SUCCESS", "total_steps": -1}, "outcome.total_steps")])
def test_an_outcome_the_service_would_refuse_is_refused_at_close_and_the_session_stays_open(session, outcome, field):
    # sent, it was refused and the HTTP close that followed closed the session on the service unscored
    _recorded(session)
    with pytest.raises(EnvelopeRejected, match=rf"^{field}: ") as refused:
        session.close(outcome)
    assert refused.value.field == field
    assert not session.closed and session.buffered_steps == 1 and session.sequence == 0
    assert session.client.spool.pending() == 0
