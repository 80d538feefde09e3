"""One open session: numbers and signs its envelopes; `send_*` spools and delivers them through its client.

A session is safe to use from several threads: numbering, signing and spooling happen under one lock, so the spool
holds a session's envelopes in sequence order (the service refuses a sequence lower than one it accepted). Steps more
than one envelope may carry (500, or 5 MB of body) go in several envelopes, in order, with consecutive sequences.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import httpx

from trajforge import crypto
from trajforge.client.batching import pieces
from trajforge.jsjson import canonical_without, js_stringify

if TYPE_CHECKING:
    from trajforge.client.ingest import IngestClient

log = logging.getLogger("trajforge.client")
ATTESTATION_ROOM = 256  # bytes the attestation adds to a body: `,"attestation":{...}` with two 64-hex strings


def combined(answers: list[dict | None]) -> dict | None:
    """One answer for envelopes sent together: the first refusal, else None if any is still spooled, else the last."""
    refused = [answer for answer in answers if answer is not None and answer.get("status") != 200]
    return refused[0] if refused else None if None in answers else answers[-1]


class Session:
    """One open session: numbers and signs envelopes; `send_*` spools and delivers them."""

    def __init__(self, client: IngestClient, session_id: str, shared_secret: str, contributor_id: str, version_hash: str, provider: str, model: str):
        self.client = client
        self.session_id = session_id
        self.shared_secret = shared_secret
        self.contributor_id = contributor_id
        self.version_hash = version_hash
        self.provider = provider
        self.model = model
        self.sequence = 0
        self.chunk_sequence = 0
        self._lock = threading.RLock()

    def sign(self, unsigned: dict[str, Any], sequence: int, canonical: bytes | None = None) -> bytes:
        """The body to send: `unsigned` with an attestation over its JavaScript serialization (`canonical`, when the
        caller has it already: the body is then that text with the attestation appended, serialized once)."""
        canonical = canonical_without(unsigned, "attestation") if canonical is None else canonical
        signature = crypto.sign_envelope(self.shared_secret, canonical, sequence)
        attestation = {"session_hmac": signature, "sequence": sequence, "app_version_hash": self.version_hash}
        if "attestation" in unsigned or canonical == b"{}":  # an attestation keeps its key's place; an empty object has no ","
            return js_stringify({**unsigned, "attestation": attestation})
        return canonical[:-1] + b',"attestation":' + js_stringify(attestation) + b"}"

    def _metadata(self, metadata: dict[str, Any] | None) -> dict[str, Any]:
        return {"provider": self.provider, "model_engine": self.model, **(metadata or {})}

    def _unsigned_chunk(self, steps: list[dict[str, Any]], metadata: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "chunk_sequence": self.chunk_sequence,
            "contributor_id": self.contributor_id,
            "metadata": self._metadata(metadata),
            "trajectory_log": steps,
        }

    def chunk(self, steps: Iterable[dict[str, Any]], metadata: dict[str, Any] | None = None) -> bytes:
        """One signed CHUNK envelope of these steps (whatever their number), taking the next sequence."""
        with self._lock:
            unsigned = self._unsigned_chunk(list(steps), metadata)
            return self._take(unsigned, js_stringify(unsigned), chunk=True)

    def _take(self, unsigned: dict[str, Any], canonical: bytes, chunk: bool) -> bytes:
        body = self.sign(unsigned, self.sequence, canonical)
        self.sequence += 1
        self.chunk_sequence += chunk
        return body

    def chunks(self, steps: Iterable[dict[str, Any]], metadata: dict[str, Any] | None = None) -> list[bytes]:
        """Signed CHUNK envelopes of these steps: one, or several in order (consecutive sequences and chunk_sequences)
        when they are more than one envelope may carry (the client's `max_steps_per_envelope` and `max_body_bytes`)."""
        steps, max_steps, max_bytes = list(steps), self.client.max_steps_per_envelope, self.client.max_body_bytes
        with self._lock:
            if len(steps) <= max_steps:
                unsigned = self._unsigned_chunk(steps, metadata)
                canonical = js_stringify(unsigned)
                if len(canonical) + ATTESTATION_ROOM <= max_bytes:
                    return [self._take(unsigned, canonical, chunk=True)]
            room = max_bytes - len(js_stringify(self._unsigned_chunk([], metadata))) - ATTESTATION_ROOM
            groups = pieces(steps, js_stringify, max_steps, room + 2)  # the empty envelope's "[]" is counted twice
            log.info("%d steps of %s go in %d envelopes (at most %d steps and %d bytes each)", len(steps), self.session_id,
                     len(groups), max_steps, max_bytes)
            return [self.chunk(group, metadata) for group in groups]

    def close_envelope(self, outcome: dict[str, Any], metadata: dict[str, Any] | None = None) -> bytes:
        unsigned = {"session_id": self.session_id, "type": "SESSION_CLOSE", "contributor_id": self.contributor_id, "metadata": self._metadata(metadata), "outcome": outcome}
        with self._lock:
            return self._take(unsigned, js_stringify(unsigned), chunk=False)

    def feedback_envelope(self, feedback: dict[str, Any]) -> bytes:
        """Feedback does not consume a sequence; its content (timestamp included) makes its HMAC unique."""
        unsigned = {"session_id": self.session_id, "type": "USER_FEEDBACK", "contributor_id": self.contributor_id, "feedback": feedback}
        with self._lock:
            return self.sign(unsigned, self.sequence)

    def _send(self, make: Any, *args: Any) -> list[dict | None]:
        """Sign and spool under the session's lock (so the spool keeps sequence order), then deliver outside it."""
        with self._lock:
            made = make(*args)
            ids = self.client.enqueue(self.session_id, made if isinstance(made, list) else [made])
        return self.client.deliver(ids)

    def send_chunk(self, steps: Iterable[dict[str, Any]], metadata: dict[str, Any] | None = None) -> dict | None:
        """Send steps (in several envelopes when they exceed one's limits); the service's answer (for several: the first
        refusal, else None if any is still spooled, else the last answer), or None while spooled (offline)."""
        return combined(self._send(self.chunks, steps, metadata))

    def close(self, outcome: dict[str, Any], metadata: dict[str, Any] | None = None) -> dict | None:
        """Send SESSION_CLOSE (scored by the server), then the HTTP close."""
        [answer] = self._send(self.close_envelope, outcome, metadata)
        if answer is not None:
            try:
                self.client._request("POST", "/v1/sessions/close", json.dumps({"session_id": self.session_id}).encode(),
                                     timeout=self.client.session_timeout_s)
            except httpx.TransportError:
                log.warning("HTTP close of %s not delivered; the SESSION_CLOSE envelope already closed it", self.session_id)
        return answer

    def send_feedback(self, feedback: dict[str, Any]) -> dict | None:
        [answer] = self._send(self.feedback_envelope, feedback)
        return answer
