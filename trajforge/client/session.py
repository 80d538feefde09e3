"""One open session: numbers and signs its envelopes; `record` buffers steps into chunks (trajforge.client.recorder),
`send_*` spools and delivers them through its client.

A session is safe to use from several threads: numbering, signing and spooling happen under one lock, so the spool
holds a session's envelopes in sequence order (the service refuses a sequence lower than one it accepted). Steps more
than one envelope may carry (500, or 5 MB of body) go in several envelopes, in order, with consecutive sequences.
Envelopes the spool does not take (QueueFull: it is full) give their sequences back, and steps buffered stay buffered.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import httpx

from trajforge import constants as c
from trajforge import crypto
from trajforge.client.batching import pieces
from trajforge.client import recorder
from trajforge.client.options import fields, schema_checked, step_list
from trajforge.contracts.envelope import Outcome
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

    def __init__(self, client: IngestClient, session_id: str, shared_secret: str, contributor_id: str, version_hash: str, provider: str,
                 model: str, metadata: dict[str, Any] | None = None):
        self.client = client
        self.session_id = session_id
        self.shared_secret = shared_secret
        self.contributor_id = contributor_id
        self.version_hash = version_hash
        self.provider = provider
        self.model = model
        self.sequence = 0
        self.chunk_sequence = 0
        self.metadata = metadata  # every envelope's metadata (beside provider and model_engine), a send's own over it
        # recorded steps a chunk carries, and the age of its first at which it goes anyway (the client's, for this session)
        self.chunk_size = client.chunk_size if client is not None else c.CHUNK_SIZE
        self.chunk_timeout_s = client.chunk_timeout_s if client is not None else c.CHUNK_TIMEOUT_MS / 1000
        self.closed = False
        self._buffer: list[dict[str, Any]] = []  # recorded steps not yet spooled
        self._first_at: float | None = None  # when the first of them was recorded (the recorder's clock)
        self._next_step = 1
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
        own = {} if metadata is None else fields("metadata", metadata)
        return {"provider": self.provider, "model_engine": self.model, **(self.metadata or {}), **own}

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
            unsigned = self._unsigned_chunk(step_list(steps), metadata)
            return self._take(unsigned, js_stringify(unsigned), chunk=True)

    def _take(self, unsigned: dict[str, Any], canonical: bytes, chunk: bool) -> bytes:
        body = self.sign(unsigned, self.sequence, canonical)
        self.sequence += 1
        self.chunk_sequence += chunk
        return body

    def chunks(self, steps: Iterable[dict[str, Any]], metadata: dict[str, Any] | None = None) -> list[bytes]:
        """Signed CHUNK envelopes of these steps: one, or several in order (consecutive sequences and chunk_sequences)
        when they are more than one envelope may carry (the client's `max_steps_per_envelope` and `max_body_bytes`)."""
        steps, max_steps, max_bytes = step_list(steps), self.client.max_steps_per_envelope, self.client.max_body_bytes
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
        unsigned = {"session_id": self.session_id, "type": "SESSION_CLOSE", "contributor_id": self.contributor_id, "metadata": self._metadata(metadata),
                    "outcome": schema_checked("outcome", Outcome, fields("outcome", outcome))}
        with self._lock:
            return self._take(unsigned, js_stringify(unsigned), chunk=False)

    def feedback_envelope(self, feedback: dict[str, Any]) -> bytes:
        """Feedback does not consume a sequence; its content (timestamp included) makes its HMAC unique."""
        unsigned = {"session_id": self.session_id, "type": "USER_FEEDBACK", "contributor_id": self.contributor_id,
                    "feedback": fields("feedback", feedback)}
        with self._lock:
            return self.sign(unsigned, self.sequence)

    # ---- steps recorded one at a time ----------------------------------------------------------

    @property
    def buffered_steps(self) -> int:
        """Recorded steps not yet sent (spooled)."""
        return len(self._buffer)

    def record(self, step: Mapping[str, Any]) -> dict | None:
        """Buffer one step (checked now: EnvelopeRejected names the field of a step the service would refuse); send the
        buffered steps as a CHUNK once `chunk_size` are buffered or the first is `chunk_timeout_s` old. The answer to
        that chunk (None when none went, or while it is spooled offline). QueueFull when the spool is full: this step is
        not recorded and the ones before it stay buffered."""
        with self._lock:
            self._refuse_if_closed()
            room = self.client.max_body_bytes - len(self._unsigned_chunk_bytes()) - ATTESTATION_ROOM
            checked = recorder.checked_step(step, self._next_step, room)
            before = (self._next_step, self._first_at)
            self._buffer.append(checked)
            self._next_step = max(self._next_step, checked["step"] + 1)
            if self._first_at is None:
                self._first_at = recorder.now()
            if not self._chunk_due():
                self._arm()
                return None
            try:
                ids, sent = self._spool(None)
            except BaseException:
                self._buffer.pop()
                self._next_step, self._first_at = before
                self._arm()
                raise
        return combined(self.client.deliver(ids)[:sent])

    def flush(self) -> dict | None:
        """Send the buffered steps now (as one CHUNK, or several past one envelope's limits); their answer, or None when
        none were buffered or they stay spooled (offline). QueueFull, and the steps stay buffered, when the spool is full."""
        with self._lock:
            if not self._buffer:
                return None
            ids, sent = self._spool(None)
        return combined(self.client.deliver(ids)[:sent])

    def flush_if_due(self) -> dict | None:
        """`flush` if the buffered steps' chunk is due (the client's chunk timer calls this)."""
        with self._lock:
            if not self._chunk_due():
                self._arm()
                return None
        return self.flush()  # delivered outside the lock

    def _unsigned_chunk_bytes(self) -> bytes:
        return js_stringify(self._unsigned_chunk([], None))

    def _chunk_due(self) -> bool:
        if not self._buffer:
            return False
        timeout = self.chunk_timeout_s
        return len(self._buffer) >= self.chunk_size or (timeout is not None and recorder.now() - self._first_at >= timeout)

    def _arm(self) -> None:
        """Tell the client's chunk timer when this session's chunk is due (or that it holds none)."""
        timer = self.client.chunk_timer
        if not self._buffer:
            timer.disarm(self)
        else:
            timer.arm(self, None if self.chunk_timeout_s is None else self._first_at + self.chunk_timeout_s)

    # ---- sending ----------------------------------------------------------------------------------

    def _spool(self, make: Any, *args: Any) -> tuple[list[int], int]:
        """Under the lock: sign the buffered steps' chunks, then what `make` makes, and spool them all in one go (all or
        none: on any error, QueueFull included, the sequences are given back and the steps stay buffered). The spool
        ids, and how many of them are the buffered steps' chunks."""
        start = (self.sequence, self.chunk_sequence)
        try:
            buffered = self.chunks(self._buffer) if self._buffer else []
            made = [] if make is None else make(*args)
            made = made if isinstance(made, list) else [made]
            ids = self.client.enqueue(self.session_id, buffered + made)
        except BaseException:
            self.sequence, self.chunk_sequence = start
            raise
        if buffered:
            log.debug("%d recorded steps of %s spooled in %d envelopes", len(self._buffer), self.session_id, len(buffered))
        self._buffer, self._first_at = [], None
        self.client.chunk_timer.disarm(self)
        return ids, len(buffered)

    def _refuse_if_closed(self) -> None:
        """The sending calls but send_feedback, once the session is closed: the service refuses all but feedback now, so
        nothing is signed, spooled and set aside (chunk() and close_envelope() still build envelopes, for tests)."""
        if self.closed:
            raise RuntimeError(f"session {self.session_id} is closed: open a new session to send more steps (send_feedback "
                               "is still taken)")

    def _send(self, make: Any, *args: Any, after_close: bool = False) -> list[dict | None]:
        """Sign and spool under the session's lock (so the spool keeps sequence order; recorded steps still buffered go
        first), then deliver outside it; the answers to what `make` made."""
        with self._lock:
            if not after_close:
                self._refuse_if_closed()
            ids, sent = self._spool(make, *args)
        return self.client.deliver(ids)[sent:]

    def send_chunk(self, steps: Iterable[dict[str, Any]], metadata: dict[str, Any] | None = None) -> dict | None:
        """Send steps (in several envelopes when they exceed one's limits); the service's answer (for several: the first
        refusal, else None if any is still spooled, else the last answer), or None while spooled (offline)."""
        return combined(self._send(self.chunks, steps, metadata))

    def close(self, outcome: dict[str, Any], metadata: dict[str, Any] | None = None) -> dict | None:
        """Send the recorded steps still buffered, then SESSION_CLOSE (scored by the server), then the HTTP close. An
        outcome the service would refuse raises EnvelopeRejected naming its field, and the session stays open."""
        with self._lock:
            self._refuse_if_closed()
            ids, sent = self._spool(self.close_envelope, outcome, metadata)
            self.closed = True
        [answer] = self.client.deliver(ids)[sent:]
        if answer is not None:
            try:
                self.client._request("POST", "/v1/sessions/close", json.dumps({"session_id": self.session_id}).encode(),
                                     timeout=self.client.session_timeout_s)
            except httpx.TransportError:
                log.warning("HTTP close of %s not delivered; the SESSION_CLOSE envelope already closed it", self.session_id)
        return answer

    def send_feedback(self, feedback: dict[str, Any]) -> dict | None:
        [answer] = self._send(self.feedback_envelope, feedback, after_close=True)
        return answer
