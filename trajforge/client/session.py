"""One open session: numbers and signs its envelopes; `send_*` spools and delivers them through its client."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import httpx

from trajforge import crypto
from trajforge.jsjson import canonical_without, js_stringify

if TYPE_CHECKING:
    from trajforge.client.ingest import IngestClient

log = logging.getLogger("trajforge.client")


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

    def sign(self, unsigned: dict[str, Any], sequence: int) -> bytes:
        """The body to send: `unsigned` with an attestation over its JavaScript serialization."""
        signature = crypto.sign_envelope(self.shared_secret, canonical_without(unsigned, "attestation"), sequence)
        signed = {**unsigned, "attestation": {"session_hmac": signature, "sequence": sequence, "app_version_hash": self.version_hash}}
        return js_stringify(signed)

    def _metadata(self, metadata: dict[str, Any] | None) -> dict[str, Any]:
        return {"provider": self.provider, "model_engine": self.model, **(metadata or {})}

    def chunk(self, steps: Iterable[dict[str, Any]], metadata: dict[str, Any] | None = None) -> bytes:
        unsigned = {
            "session_id": self.session_id,
            "chunk_sequence": self.chunk_sequence,
            "contributor_id": self.contributor_id,
            "metadata": self._metadata(metadata),
            "trajectory_log": list(steps),
        }
        body = self.sign(unsigned, self.sequence)
        self.sequence += 1
        self.chunk_sequence += 1
        return body

    def close_envelope(self, outcome: dict[str, Any], metadata: dict[str, Any] | None = None) -> bytes:
        unsigned = {"session_id": self.session_id, "type": "SESSION_CLOSE", "contributor_id": self.contributor_id, "metadata": self._metadata(metadata), "outcome": outcome}
        body = self.sign(unsigned, self.sequence)
        self.sequence += 1
        return body

    def feedback_envelope(self, feedback: dict[str, Any]) -> bytes:
        """Feedback does not consume a sequence; its content (timestamp included) makes its HMAC unique."""
        unsigned = {"session_id": self.session_id, "type": "USER_FEEDBACK", "contributor_id": self.contributor_id, "feedback": feedback}
        return self.sign(unsigned, self.sequence)

    def send_chunk(self, steps: Iterable[dict[str, Any]], metadata: dict[str, Any] | None = None) -> dict | None:
        return self.client.send(self.session_id, self.chunk(steps, metadata))

    def close(self, outcome: dict[str, Any], metadata: dict[str, Any] | None = None) -> dict | None:
        """Send SESSION_CLOSE (scored by the server), then the HTTP close."""
        answer = self.client.send(self.session_id, self.close_envelope(outcome, metadata))
        if answer is not None:
            try:
                self.client._request("POST", "/v1/sessions/close", json.dumps({"session_id": self.session_id}).encode(),
                                     timeout=self.client.session_timeout_s)
            except httpx.TransportError:
                log.warning("HTTP close of %s not delivered; the SESSION_CLOSE envelope already closed it", self.session_id)
        return answer

    def send_feedback(self, feedback: dict[str, Any]) -> dict | None:
        return self.client.send(self.session_id, self.feedback_envelope(feedback))
