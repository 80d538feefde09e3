"""The service's side of seed 003's optional event signing (`trajforge.contracts.event_signing`): a request of a token
with a signing key must carry a valid, fresh signature of its body, seen once.

Signatures seen are kept in `registry/provenance.db` beside the tokens, so every replica (and a restarted one) refuses
a replay, for as long as a signature can be used at all (the timestamp window, `MAX_SKEW_S`). They are keyed by the
signature's bytes, not its base64 spelling: base64 of 64 bytes leaves 4 spare bits, so one signature has 16 spellings
that decode to it."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Mapping

from serve_apps.http import HTTPError
from serve_apps.ingest import registry
from serve_apps.ingest.tokens import Principal
from trajforge.contracts.event_signing import MAX_SKEW_S, SIGNATURE_HEADER, TIMESTAMP_HEADER, signature_problem
from trajforge.lake import Lake

SCHEMA = """
CREATE TABLE IF NOT EXISTS seen_signatures (
    signature BLOB PRIMARY KEY,            -- the Ed25519 signature's 64 bytes
    forget_after REAL NOT NULL             -- unix time past which its timestamp is refused anyway
);
CREATE INDEX IF NOT EXISTS seen_signatures_by_age ON seen_signatures (forget_after);
"""


class SignatureGuard:
    def __init__(self, lake: Lake) -> None:
        self._lock = threading.Lock()
        self._conn = registry.connect(lake.provenance_db)
        self._conn.executescript(SCHEMA)

    def check(self, who: Principal, headers: Mapping[str, str], body: bytes, now: float | None = None) -> None:
        """401 naming what is wrong unless the request is signed with `who`'s key; 409 for a signature already used
        (by any replica). Blocks on the registry's write lock: call it off the event loop."""
        signature = headers.get(SIGNATURE_HEADER)
        problem = signature_problem(who.signing_key, body, headers.get(TIMESTAMP_HEADER), signature)
        if problem is not None:
            raise HTTPError(401, "bad_signature", problem, field=SIGNATURE_HEADER)
        now = time.time() if now is None else now
        with self._lock, registry.immediate(self._conn) as conn:
            conn.execute("DELETE FROM seen_signatures WHERE forget_after < ?", (now,))
            fresh = conn.execute("INSERT OR IGNORE INTO seen_signatures (signature, forget_after) VALUES (?, ?)",
                                 (base64.b64decode(signature), now + 2 * MAX_SKEW_S)).rowcount
        if not fresh:
            raise HTTPError(409, "replayed", f"this {SIGNATURE_HEADER} was already used: sign each request anew (a replay is refused)",
                            field=SIGNATURE_HEADER)

    def close(self) -> None:
        self._conn.close()
