"""The per-envelope work before anything is stored: schema, signature, and what the commit needs to know.

This is the CPU part of ingest (parse, validate, JS-canonical serialization, HMAC); it never touches
the registry's sequence counters, so a rejected envelope never consumes a sequence.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from trajforge.constants import MAX_SEQUENCE
from trajforge.contracts.envelope import EnvelopeRejected, validate_envelope
from trajforge.crypto import verify_envelope
from trajforge.jsjson import JSONRejected, canonical_without


@dataclass(frozen=True)
class Candidate:
    """A verified envelope waiting for the sequence check and the durable write."""

    kind: str
    session_id: str
    sequence: int
    hmac: str
    contributor_id: str | None
    steps: int
    body: bytes
    client: str


@dataclass(frozen=True)
class Verdict:
    """The HTTP answer for one envelope."""

    status: int
    body: dict[str, Any]


def rejection(status: int, error: str, message: str, **extra: Any) -> Verdict:
    return Verdict(status, {"accepted": False, "error": error, "message": message, **extra})


def verify(
    envelope: Any,
    body: bytes,
    client: str,
    secret_of: Callable[[str], str | None],
    now: float | None = None,
) -> Candidate | Verdict:
    """Check one parsed envelope in the specification's order (session, attestation, signature, then the schema);
    a Verdict is a rejection, a Candidate goes on to the commit (which checks the session's state and sequence)."""
    if not isinstance(envelope, dict):
        return rejection(400, "invalid_envelope", "an envelope must be a JSON object", rule="type")
    session_id = envelope.get("session_id")
    if session_id is not None and not isinstance(session_id, str):
        return rejection(400, "invalid_envelope", "session_id: must be a string", field="session_id", rule="string_type")
    if not session_id:
        return rejection(400, "invalid_envelope", "session_id: field required", field="session_id", rule="missing")
    try:
        secret = secret_of(session_id)
    except UnicodeEncodeError:  # a lone UTF-16 surrogate, which the registry cannot look up: /v1/sessions/open refuses such an id
        secret = None
    if secret is None:
        return rejection(404, "unknown_session", f"session {session_id!r} was never opened here: open it with POST /v1/sessions/open")
    attestation = envelope.get("attestation")
    if not isinstance(attestation, dict) or not isinstance(attestation.get("session_hmac"), str) or not attestation["session_hmac"]:
        return rejection(401, "missing_attestation", "attestation.session_hmac: a non-empty HMAC is required", field="attestation.session_hmac", rule="missing")
    sequence = attestation.get("sequence")
    if not isinstance(sequence, int) or isinstance(sequence, bool) or not 0 <= sequence <= MAX_SEQUENCE:
        return rejection(400, "invalid_envelope", f"attestation.sequence: an integer from 0 to {MAX_SEQUENCE} is required",
                         field="attestation.sequence", rule="sequence")
    try:
        signed_bytes = canonical_without(envelope, "attestation")
    except JSONRejected as exc:
        return rejection(400, "invalid_envelope", str(exc), rule="json")
    signature = attestation["session_hmac"]
    if not verify_envelope(secret, signed_bytes, sequence, signature) and not any(
        verify_envelope(secret, spelling, sequence, signature) for spelling in python_spellings(envelope, signed_bytes)
    ):
        return rejection(401, "invalid_signature", "attestation.session_hmac does not match the envelope signed with the session key")
    try:
        model = validate_envelope(envelope, now=now)
    except EnvelopeRejected as exc:
        return rejection(400, "invalid_envelope", str(exc), field=exc.field, rule=exc.rule)
    attestation = model.attestation
    kind = envelope.get("type") or "CHUNK"
    steps = len(envelope.get("trajectory_log") or ()) if kind == "CHUNK" else 0
    return Candidate(
        kind=kind,
        session_id=model.session_id,
        sequence=attestation.sequence,
        hmac=attestation.session_hmac.lower(),
        contributor_id=envelope.get("contributor_id"),
        steps=steps,
        body=body,
        client=client,
    )


def python_spellings(envelope: dict[str, Any], canonical: bytes) -> Iterator[bytes]:
    """The envelope without `attestation` as Python's `json.dumps` writes it (compact or with its default separators,
    ASCII-escaped or not), where that differs from JavaScript's `JSON.stringify` (`1.0` for `1`, `\\u00e9` for `é`):
    a client in Python that signs what `json.dumps` gives signed the same parsed envelope with the session key, so it
    is accepted too. Only tried after the JavaScript spelling failed."""
    rest = {key: value for key, value in envelope.items() if key != "attestation"}
    seen = {canonical}
    for ensure_ascii in (True, False):
        for separators in ((",", ":"), (", ", ": ")):
            try:
                spelling = json.dumps(rest, ensure_ascii=ensure_ascii, separators=separators).encode("utf-8")
            except (UnicodeEncodeError, ValueError, TypeError):  # a lone surrogate cannot be UTF-8
                continue
            if spelling not in seen:
                seen.add(spelling)
                yield spelling
