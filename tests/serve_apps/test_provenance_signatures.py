"""Seed 003's signed events: a signature is taken once, whichever ingest replica sees it and however its base64 is
spelt (several replicas share one lake; each builds its own guard over it)."""

from __future__ import annotations

import base64
import json

import pytest

from serve_apps.http import HTTPError
from serve_apps.ingest.signatures import SignatureGuard
from serve_apps.ingest.tokens import Principal
from trajforge.contracts.event_signing import SIGNATURE_HEADER, new_signing_key, sign_request
from trajforge.lake import Lake

BODY = json.dumps({"event_type": "agent_action", "actor_type": "agent", "actor_id": "a", "tool": "t", "intent": "i"}).encode()
B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _refused(guard: SignatureGuard, who: Principal, headers: dict[str, str]) -> int | None:
    try:
        guard.check(who, headers, BODY)
    except HTTPError as exc:
        return exc.status
    return None


@pytest.fixture
def signer(tmp_path):
    private, public = new_signing_key()
    guards = [SignatureGuard(Lake(tmp_path / "lake")) for _ in range(3)]  # three replicas of one ingest app
    yield private, Principal("user", "tok_1", "acme", "n", public), guards
    for guard in guards:
        guard.close()


def test_a_signature_taken_by_one_replica_is_a_replay_on_the_others_and_after_a_restart(signer, tmp_path):
    private, who, guards = signer
    headers = sign_request(private, BODY)
    assert [_refused(guard, who, headers) for guard in guards] == [None, 409, 409]
    restarted = SignatureGuard(Lake(tmp_path / "lake"))
    try:
        assert _refused(restarted, who, headers) == 409
    finally:
        restarted.close()
    assert _refused(guards[0], who, sign_request(private, BODY + b" ")) == 401  # a signature of other bytes
    assert _refused(guards[1], who, sign_request(private, BODY, now=None) | {"X-Stereos-Timestamp": "1"}) == 401


def test_another_base64_spelling_of_a_used_signature_is_a_replay(signer):
    private, who, guards = signer
    headers = sign_request(private, BODY)
    spelt = headers[SIGNATURE_HEADER]
    raw = base64.b64decode(spelt)
    last = B64.index(spelt[-3])  # 64 bytes are 86 base64 digits and '=='; the last digit's low 4 bits are spare
    others = [spelt[:-3] + B64[(last & ~15) | low] + "==" for low in range(16) if (last & ~15) | low != last]
    assert len(others) == 15 and all(base64.b64decode(other) == raw for other in others)
    assert _refused(guards[0], who, headers) is None
    assert {_refused(guards[i % 3], who, {**headers, SIGNATURE_HEADER: other}) for i, other in enumerate(others)} == {409}


def test_signatures_are_forgotten_once_their_timestamp_is_refused_anyway(signer):
    private, who, guards = signer
    old = sign_request(private, BODY)
    assert _refused(guards[0], who, old) is None
    guards[0].check(who, sign_request(private, BODY + b"\n"), BODY + b"\n", now=10**10)  # far later: the sweep runs
    assert guards[1]._conn.execute("SELECT COUNT(*) FROM seen_signatures").fetchone()[0] == 1
