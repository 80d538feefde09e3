"""Protocol cryptography: ECDH on P-256, envelope HMACs, and encryption of secrets at rest.

Wire formats follow the Central Command specification (Node's `crypto.createECDH('prime256v1')`):
public keys are base64 of the uncompressed point (65 bytes), a shared secret is base64 of the raw
32-byte x coordinate, and the HMAC key is that secret's raw bytes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import struct
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_CURVE = ec.SECP256R1()


def generate_keypair() -> tuple[str, str]:
    """Return (public_key_b64, private_key_b64) like Node's `ecdh.getPublicKey()/getPrivateKey()`."""
    private_key = ec.generate_private_key(_CURVE)
    private_b64 = base64.b64encode(private_key.private_numbers().private_value.to_bytes(32, "big")).decode()
    return public_key_b64(private_key), private_b64


def public_key_b64(private_key: ec.EllipticCurvePrivateKey) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return base64.b64encode(private_key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)).decode()


def load_public_key(public_b64: str) -> ec.EllipticCurvePublicKey:
    """Parse a base64 uncompressed (or compressed) P-256 point; ValueError when it is not one."""
    try:
        raw = base64.b64decode(public_b64, validate=True)
        return ec.EllipticCurvePublicKey.from_encoded_point(_CURVE, raw)
    except (ValueError, TypeError) as exc:
        raise ValueError("public_key is not a base64 P-256 point") from exc


def derive_shared_secret(private_b64: str, peer_public_b64: str) -> str:
    """ECDH on P-256; returns base64 of the raw shared secret (Node's `ecdh.computeSecret()`)."""
    private_value = int.from_bytes(base64.b64decode(private_b64), "big")
    private_key = ec.derive_private_key(private_value, _CURVE)
    secret = private_key.exchange(ec.ECDH(), load_public_key(peer_public_b64))
    return base64.b64encode(secret).decode()


def sign_envelope(shared_secret_b64: str, envelope_bytes: bytes, sequence: int) -> str:
    """Hex HMAC-SHA256 over `uint32BE(sequence) || envelope_bytes`."""
    key = base64.b64decode(shared_secret_b64)
    return hmac.new(key, struct.pack(">I", sequence) + envelope_bytes, hashlib.sha256).hexdigest()


def verify_envelope(shared_secret_b64: str, envelope_bytes: bytes, sequence: int, signature_hex: str) -> bool:
    """Constant-time check of an envelope HMAC."""
    expected = sign_envelope(shared_secret_b64, envelope_bytes, sequence)
    return hmac.compare_digest(expected.encode(), signature_hex.lower().encode())


class SecretBox:
    """AES-256-GCM for secrets at rest (server private keys, shared secrets).

    The key comes from the environment variable named by `env_var` (base64 of 32 bytes) or, when that is
    unset, from `key_file`, created with mode 0600 at first use. This protects a copy of the database
    that leaves the machine without the key; it does not protect against someone who can read the key
    file or the process memory.
    """

    def __init__(self, key: bytes):
        if len(key) != 32:
            raise ValueError("secret key must be 32 bytes")
        self._aead = AESGCM(key)
        self._hash_key = hmac.new(key, b"trajforge address pseudonyms", hashlib.sha256).digest()

    @classmethod
    def from_env_or_file(cls, env_var: str, key_file: Path) -> "SecretBox":
        encoded = os.environ.get(env_var)
        if encoded:
            try:
                return cls(base64.b64decode(encoded, validate=True))
            except ValueError as exc:
                raise ValueError(f"{env_var} must be base64 of 32 random bytes (try: openssl rand -base64 32)") from exc
        key_file = Path(key_file)
        if not key_file.exists():
            _create_key_file(key_file)
        try:
            return cls(base64.b64decode(key_file.read_bytes().strip(), validate=True))
        except ValueError:
            raise ValueError(f"the key file {key_file} is damaged (not base64 of 32 bytes). If the registry beside it holds no "
                             f"sessions yet, delete it and a new key is made; else restore it from a backup, or the sealed "
                             f"session secrets cannot be opened") from None

    def seal(self, plaintext: str) -> str:
        nonce = os.urandom(12)
        return base64.b64encode(nonce + self._aead.encrypt(nonce, plaintext.encode(), None)).decode()

    def open(self, sealed: str) -> str:
        raw = base64.b64decode(sealed)
        return self._aead.decrypt(raw[:12], raw[12:], None).decode()

    def keyed_hash(self, value: str) -> str:
        """A stable pseudonym for a value (client addresses): HMAC-SHA256 with a key derived from this box."""
        return hmac.new(self._hash_key, value.encode(), hashlib.sha256).hexdigest()[:32]


def _create_key_file(key_file: Path) -> None:
    """A new random key at `key_file`, whole or not at all: written and fsync'd under a temporary name, then
    hard-linked into place, which fails if another process (a second replica) made one first; that one is kept."""
    from trajforge.atomic import fsync_dir

    key_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = key_file.with_name(f".{key_file.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(base64.b64encode(os.urandom(32)))
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, key_file)
        except FileExistsError:
            pass
    finally:
        temporary.unlink(missing_ok=True)
    fsync_dir(key_file.parent)
