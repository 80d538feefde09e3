"""Optional event signing (seed 003: "optional event signing for high-trust environments").

A token made with a `signing_key` (the base64 of a raw 32-byte Ed25519 public key) takes provenance events only when
the request is signed by the matching private key: `X-Stereos-Timestamp` (unix seconds) and `X-Stereos-Signature`
(the base64 Ed25519 signature of `<timestamp>.` followed by the exact body bytes). The service keeps only the public
key, so a stolen registry cannot forge events; a timestamp more than `MAX_SKEW_S` from the service's clock is refused,
and so is a signature it has already seen within that window (a replay).

    private, public = new_signing_key()                   # keep `private` with the agent; give `public` to POST /v1/tokens
    headers = sign_request(private, body)                  # {"X-Stereos-Timestamp": ..., "X-Stereos-Signature": ...}
"""

from __future__ import annotations

import base64
import binascii
import time

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

TIMESTAMP_HEADER, SIGNATURE_HEADER = "X-Stereos-Timestamp", "X-Stereos-Signature"
MAX_SKEW_S = 300


def new_signing_key() -> tuple[Ed25519PrivateKey, str]:
    """A new key pair: the private key, and the public key as a token's `signing_key` takes it."""
    private = Ed25519PrivateKey.generate()
    return private, public_key_b64(private)


def public_key_b64(private: Ed25519PrivateKey) -> str:
    raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def checked_public_key(text: str) -> str:
    """`text` if it is the base64 of a raw 32-byte Ed25519 public key, else ValueError saying what it must be."""
    try:
        raw = base64.b64decode(text, validate=True)
        Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError):
        raise ValueError("must be the base64 of a raw 32-byte Ed25519 public key (trajforge.contracts.event_signing.new_signing_key)") from None
    return text


def signed_message(timestamp: str, body: bytes) -> bytes:
    return timestamp.encode() + b"." + body


def sign_request(private: Ed25519PrivateKey, body: bytes, now: float | None = None) -> dict[str, str]:
    """The two headers that sign `body` (sent exactly as these bytes) at `now`."""
    timestamp = str(int(time.time() if now is None else now))
    return {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: base64.b64encode(private.sign(signed_message(timestamp, body))).decode()}


def signature_problem(public_b64: str, body: bytes, timestamp: str | None, signature: str | None, now: float | None = None) -> str | None:
    """Why the request is not signed by `public_b64`'s key now, or None when it is."""
    if not timestamp or not signature:
        return f"this token signs its events: send {TIMESTAMP_HEADER} and {SIGNATURE_HEADER} (trajforge.contracts.event_signing.sign_request)"
    try:
        skew = abs((time.time() if now is None else now) - int(timestamp))
    except ValueError:
        return f"{TIMESTAMP_HEADER} must be unix seconds, got {timestamp[:40]!r}"
    if skew > MAX_SKEW_S:
        return f"{TIMESTAMP_HEADER} is {skew:.0f} s from the service's clock (at most {MAX_SKEW_S} s): sign the request when it is sent"
    try:
        Ed25519PublicKey.from_public_bytes(base64.b64decode(public_b64)).verify(base64.b64decode(signature, validate=True),
                                                                                signed_message(timestamp, body))
    except (InvalidSignature, binascii.Error, ValueError):
        return f"{SIGNATURE_HEADER} does not verify with this token's signing key over {TIMESTAMP_HEADER}, '.' and the body as sent"
    return None
