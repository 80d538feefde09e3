"""Which spellings of an envelope a signature may cover: JavaScript's `JSON.stringify`, and Python's `json.dumps`."""

from __future__ import annotations

import base64
import json
import os
import time

import pytest
from helpers import CONTRIBUTOR, steps

from serve_apps.ingest.verify import Candidate, Verdict, verify
from trajforge import crypto

SECRET = base64.b64encode(os.urandom(32)).decode()


def _chunk() -> dict:
    log = steps(2, base=time.time() - 60)
    log[0]["timestamp"] = float(int(log[0]["timestamp"]))  # 1765000000.0: Python writes "1765000000.0", JavaScript "1765000000"
    log[1]["content"] = "café résumé ✓"  # json.dumps escapes it by default, JSON.stringify never does
    return {"session_id": "sess_spelling", "chunk_sequence": 0, "contributor_id": CONTRIBUTOR,
            "metadata": {"provider": "codex", "model_engine": "gpt-5.5", "session_quality": 50.0}, "trajectory_log": log}


def _signed(envelope: dict, signed_bytes: bytes) -> dict:
    hmac_hex = crypto.sign_envelope(SECRET, signed_bytes, 3)
    return {**envelope, "attestation": {"session_hmac": hmac_hex, "sequence": 3, "app_version_hash": "a" * 64}}


@pytest.mark.parametrize("spelling", [
    {"separators": (",", ":")},
    {"separators": (",", ":"), "ensure_ascii": False},
    {},
    {"ensure_ascii": False},
], ids=["compact", "compact-utf8", "default", "default-utf8"])
def test_an_envelope_signed_over_pythons_json_dumps_is_accepted(spelling):
    envelope = _chunk()
    signed = _signed(envelope, json.dumps(envelope, **spelling).encode("utf-8"))
    checked = verify(signed, json.dumps(signed).encode(), "client", lambda _: SECRET)
    assert isinstance(checked, Candidate) and checked.sequence == 3


def test_another_envelope_or_sequence_under_a_python_spelling_is_still_refused():
    envelope = _chunk()
    signed = _signed(envelope, json.dumps(envelope).encode())
    tampered = {**signed, "chunk_sequence": 1}
    resequenced = {**signed, "attestation": {**signed["attestation"], "sequence": 4}}
    for candidate in (tampered, resequenced):
        checked = verify(candidate, json.dumps(candidate).encode(), "client", lambda _: SECRET)
        assert isinstance(checked, Verdict) and (checked.status, checked.body["error"]) == (401, "invalid_signature")
