"""The service's side of seed 003's optional event signing (`trajforge.contracts.event_signing`): a request of a token
with a signing key must carry a valid, fresh signature of its body, seen once. Replays are remembered per replica for
the timestamp window (`MAX_SKEW_S`), which is as long as a signature can be used at all."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping

from serve_apps.http import HTTPError
from serve_apps.ingest.tokens import Principal
from trajforge.contracts.event_signing import MAX_SKEW_S, SIGNATURE_HEADER, TIMESTAMP_HEADER, signature_problem


class SignatureGuard:
    def __init__(self) -> None:
        self._seen: dict[str, float] = {}  # signature -> when it may be forgotten
        self._lock = threading.Lock()

    def check(self, who: Principal, headers: Mapping[str, str], body: bytes) -> None:
        """401 naming what is wrong unless the request is signed with `who`'s key; 409 for a signature already used."""
        signature = headers.get(SIGNATURE_HEADER)
        problem = signature_problem(who.signing_key, body, headers.get(TIMESTAMP_HEADER), signature)
        if problem is not None:
            raise HTTPError(401, "bad_signature", problem, field=SIGNATURE_HEADER)
        now = time.monotonic()
        with self._lock:
            self._seen = {seen: until for seen, until in self._seen.items() if until > now} if len(self._seen) > 10_000 else self._seen
            if self._seen.get(signature, 0) > now:
                raise HTTPError(409, "replayed", f"this {SIGNATURE_HEADER} was already used: sign each request anew (a replay is refused)",
                                field=SIGNATURE_HEADER)
            self._seen[signature] = now + 2 * MAX_SKEW_S
