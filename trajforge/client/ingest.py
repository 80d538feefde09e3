"""`IngestClient`: sessions (ECDH with the service), envelopes through the durable spool, telemetry events."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from pathlib import Path
from typing import Any

import httpx

from trajforge import constants as c
from trajforge import crypto
from trajforge.client.batching import pieces
from trajforge.client.errors import IngestError, ServiceUnreachable
from trajforge.client.identity import GROOVE_VERSION, app_version_hash, machine_fingerprint
from trajforge.client.options import check_client_options, check_interval, check_session, service_url
from trajforge.client.outbox import FlushReport, Outbox
from trajforge.client.recorder import ChunkTimer
from trajforge.client.session import Session
from trajforge.client.transport import Transport
from trajforge.spool import Spool

log = logging.getLogger("trajforge.client")


def _event_json(event: dict[str, Any]) -> bytes:
    return json.dumps(event, ensure_ascii=False).encode()


class IngestClient:
    def __init__(
        self,
        base_url: str,
        *,
        spool_path: str | Path = ":memory:",
        timeout_s: float = 30.0,
        session_timeout_s: float = 10.0,
        offline_probe_s: float = 60.0,
        max_retries: int = 5,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 60.0,
        batch_size: int = c.MAX_BATCH_ENVELOPES,
        max_body_bytes: int = c.MAX_BODY_BYTES,
        max_steps_per_envelope: int = c.MAX_STEPS_PER_ENVELOPE,
        max_events_per_request: int = 1000,
        chunk_size: int = c.CHUNK_SIZE,
        chunk_timeout_s: float | None = c.CHUNK_TIMEOUT_MS / 1000,
        chunk_timer: bool = True,
        max_queue_size: int | None = c.MAX_QUEUE_SIZE,
        transport: httpx.BaseTransport | None = None,
        verify: bool | str = True,
    ):
        check_client_options(chunk_size=chunk_size, chunk_timeout_s=chunk_timeout_s, max_queue_size=max_queue_size, timeout_s=timeout_s, session_timeout_s=session_timeout_s, offline_probe_s=offline_probe_s,
                             backoff_base_s=backoff_base_s, backoff_max_s=backoff_max_s, max_retries=max_retries, batch_size=batch_size,
                             max_body_bytes=max_body_bytes, max_steps_per_envelope=max_steps_per_envelope,
                             max_events_per_request=max_events_per_request)
        self.base_url = service_url(base_url)
        self.transport = Transport(self.base_url, timeout_s=timeout_s, max_retries=max_retries, backoff_base_s=backoff_base_s,
                                   backoff_max_s=backoff_max_s, transport=transport, verify=verify)
        self._http = self.transport.http
        self.spool = Spool(Path(spool_path).expanduser() if str(spool_path) != ":memory:" else spool_path)
        self.outbox = Outbox(self.spool, self.transport, batch_size=batch_size, max_body_bytes=max_body_bytes, offline_probe_s=offline_probe_s,
                             max_queue_size=max_queue_size)
        self.chunk_size = chunk_size  # steps a session's `record` gathers into one CHUNK (CHUNK_SIZE, 200)
        self.chunk_timeout_s = chunk_timeout_s  # age of the first buffered step at which the chunk goes anyway (None: never)
        self.chunk_timer = ChunkTimer(thread=chunk_timer and chunk_timeout_s is not None, retry_s=offline_probe_s)
        self.session_timeout_s = session_timeout_s  # session open and close (the specification's 10 s)
        self.max_body_bytes = max_body_bytes  # the service's body limit (5 MB): envelopes, batches and event requests fit it
        self.max_steps_per_envelope = max_steps_per_envelope  # the schema's 500: more steps go in several envelopes
        self.max_events_per_request = max_events_per_request  # the events endpoint's 1,000: more go in several requests
        self._drainer: threading.Thread | None = None
        self._stop = threading.Event()

    def _refuse_if_closed(self) -> None:
        if self._stop.is_set():
            raise RuntimeError(f"this IngestClient ({self.base_url}) is closed: make a new one (the same spool_path keeps its "
                               "spool) and give it to a session still open with session.client = new_client")

    # ---- HTTP -----------------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: bytes | None = None, params: dict | None = None,
                 headers: dict[str, str] | None = None, timeout: float | None = None) -> tuple[int, Any]:
        return self.transport.request(method, path, body, params, headers, timeout)

    def health(self) -> bool:
        return self.transport.health()

    def get(self, path: str, **params: Any) -> Any:
        status, answer = self._request("GET", path, params=params or None)
        if status != 200:
            raise IngestError(status, answer)
        return answer

    def send_events(self, events: list[dict[str, Any]], api_key: str | None = None) -> dict[str, Any]:
        """Starcode telemetry events (`POST /v1/events`), retried like envelopes, in as many requests, in order, as the
        service's limits ask (`max_events_per_request`, `max_body_bytes`); one answer adding theirs up. A resent event
        is answered as a duplicate, so retrying (or sending again after a refusal) is safe; a refusal (401, 400, 413)
        raises IngestError, and the requests before it were stored."""
        headers = {"x-company-api-key": api_key} if api_key else None
        total: dict[str, Any] = {"accepted": 0, "duplicates": 0, "event_ids": []}
        envelope_room = self.max_body_bytes - len(b'{"events":[]}') + 2
        for part in pieces(list(events), _event_json, self.max_events_per_request, envelope_room):
            body = b'{"events":[' + b",".join(_event_json(event) for event in part) + b"]}"
            status, answer = self._request("POST", "/v1/events", body, headers=headers)
            if status != 200:
                raise IngestError(status, answer)
            for key, value in answer.items():
                total[key] = total[key] + value if key in total and type(total[key]) is type(value) else value
        return total

    # ---- sessions -------------------------------------------------------------------------------

    def open_session(self, *, provider: str, model: str, contributor_id: str, session_id: str | None = None, machine: str | None = None,
                     version_hash: str | None = None, groove_version: str = GROOVE_VERSION,
                     metadata: dict[str, Any] | None = None) -> Session:
        """ECDH with the service; needs the service to be reachable (a session cannot be signed offline): raises
        ServiceUnreachable (an httpx.TransportError) when it does not answer, IngestError when it refuses. Arguments every
        envelope would carry are checked first (EnvelopeRejected names a contributor_id or metadata field the service refuses). `metadata`
        (agent_role, agent_id, ...) goes in each of the session's envelopes, a send's own metadata over it."""
        self._refuse_if_closed()
        check_session(provider=provider, model=model, contributor_id=contributor_id, session_id=session_id, version_hash=version_hash,
                      metadata=metadata)
        public_b64, private_b64 = crypto.generate_keypair()
        request = {
            "session_id": session_id or f"sess_{uuid.uuid4()}",
            "public_key": public_b64,
            "provider": provider,
            "model": model,
            "machine_fingerprint": machine or machine_fingerprint(),
            "app_version_hash": version_hash or app_version_hash(),
            "groove_version": groove_version,
        }
        try:
            status, answer = self._request("POST", "/v1/sessions/open", json.dumps(request).encode(), timeout=self.session_timeout_s)
        except httpx.TransportError as exc:
            raise ServiceUnreachable(
                f"cannot open a session: no ingest service answers at {self.base_url} ({type(exc).__name__}: {exc}); "
                "start it with `trajforge serve` or check the URL (a session needs the service: its key is agreed online)"
            ) from exc
        if status != 200:
            raise IngestError(status, answer)
        secret = crypto.derive_shared_secret(private_b64, answer["server_public_key"])
        return Session(self, request["session_id"], secret, contributor_id, request["app_version_hash"], provider, model, metadata)

    # ---- delivery -------------------------------------------------------------------------------

    def send(self, session_id: str, body: bytes) -> dict | None:
        """Spool one signed envelope, then deliver the spool (the backlog first, in batches); the server's answer for
        it, or None if it stays spooled (offline)."""
        [answer] = self.deliver(self.enqueue(session_id, [body]))
        return answer

    def enqueue(self, session_id: str, bodies: list[bytes]) -> list[int]:
        """Spool signed envelopes, in this order; their spool ids, for `deliver`."""
        self._refuse_if_closed()
        return self.outbox.put(session_id, bodies)

    def deliver(self, spool_ids: list[int]) -> list[dict | None]:
        """Deliver the spool unless the service is known to be down; the answers for these envelopes (None: spooled)."""
        return self.outbox.deliver(spool_ids)

    def drain(self) -> FlushReport:
        """Deliver every spooled envelope in order, in batches, until the spool is empty or the service is unreachable
        (or busy); tried even while the service is known to be down."""
        self._refuse_if_closed()
        return self.outbox.drain()

    flush = drain

    def start_background_drain(self, interval_s: float = 60.0) -> None:
        """Every `interval_s`, if envelopes are waiting and /health answers, deliver them."""
        check_interval(interval_s)
        if self._drainer is not None:
            return

        def loop() -> None:
            while not self._stop.wait(interval_s):
                if self.spool.pending() and self.health():
                    self.outbox.drain()  # not self.drain(): a close() setting _stop meanwhile waits for this one

        self._drainer = threading.Thread(target=loop, name="trajforge-spool-drain", daemon=True)
        self._drainer.start()

    def close(self, flush: bool = True) -> None:
        """Stop the background drain; with `flush`, deliver what the spool still holds first (with the retries; once,
        without them, when the service is known down and the spool is in memory; not at all when it is known down and
        the spool is a file, which keeps them for the next run)."""
        if self._stop.is_set():
            return  # closed already (close() inside a with block, then its exit)
        for session in self.chunk_timer.holding():  # recorded steps not yet sent: spooled as chunks (sessions stay open)
            try:
                session.flush()
            except Exception as exc:  # noqa: BLE001 - the other sessions' steps still go
                log.error("%d recorded steps of %s could not be spooled at the client's close (%s): they are only in the "
                          "Session object now; give it an open client (session.client) and call session.flush()",
                          session.buffered_steps, session.session_id, exc)
        self.chunk_timer.stop()
        self._stop.set()
        if self._drainer is not None:
            self._drainer.join(timeout=5)
        in_memory = str(self.spool.path) == ":memory:"
        if flush and self.spool.pending() and (self.outbox.offline_since is None or in_memory):
            self.outbox.drain(retries=0 if self.outbox.offline_since is not None else None)
        if str(self.spool.path) == ":memory:" and self.spool.pending():
            log.warning("%d envelopes were not delivered and are lost with this client's in-memory spool: give IngestClient "
                        "a spool_path to keep them for the next run", self.spool.pending())
        self.transport.close()
        self.spool.close()

    def __enter__(self) -> IngestClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
