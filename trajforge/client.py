"""The Python SDK an agent uses to send signed trajectories to the ingest service.

    client = IngestClient("http://127.0.0.1:8000", spool_path="~/.cache/trajforge/spool.db")
    session = client.open_session(provider="codex", model="gpt-5.5", contributor_id=contributor_id_for("alice"))
    session.send_chunk(steps, metadata={"agent_role": "frontend"})
    session.close({"status": "SUCCESS"})
    client.flush()

Every envelope is signed (HMAC-SHA256 keyed by the ECDH secret of its session, over the JavaScript
serialization the server reproduces), written to a durable local spool, then delivered in order
with retries and exponential backoff. When the service is unreachable the envelopes stay in the
spool and go out at the next `flush`, from the background drainer, or at a `send`: once a delivery has found the
service down, a `send` only spools (it does not wait through the retries again) until `/health` answers, which it
asks at most every `offline_probe_s` (60 s, as the specification's client probes its offline queue).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from trajforge import constants as c
from trajforge import crypto
from trajforge.jsjson import canonical_without, js_stringify
from trajforge.spool import Spool, Spooled

log = logging.getLogger(__name__)
RETRYABLE = {408, 425, 429, 500, 502, 503, 504}
_now = time.monotonic


def retryable(status: int, answer: Any) -> bool:
    """Worth sending again later: the service is busy or down, not refusing this envelope for good."""
    refused_for_good = isinstance(answer, dict) and answer.get("error") == "session_envelope_limit"
    return status in RETRYABLE and not refused_for_good


def _retry_after(answer: Any) -> float:
    """The wait the service asked for (`retryAfter`, seconds), 0 when it named none."""
    try:
        return max(0.0, float(answer.get("retryAfter", 0))) if isinstance(answer, dict) else 0.0
    except (TypeError, ValueError):
        return 0.0


def fitting(items: list[Spooled], max_body_bytes: int) -> list[Spooled]:
    """The longest head of `items` whose batch body (a JSON array of their bodies) fits `max_body_bytes`; at least
    one item, so an envelope too large even alone is sent and refused (413) on its own, never holding up the rest."""
    size, count = 1, 0
    for item in items:
        size += len(item.body) + 1  # the item and its "," (or the closing "]")
        if count and size > max_body_bytes:
            break
        count += 1
    return items[:count]


GROOVE_VERSION = "0.27.113"


class IngestError(RuntimeError):
    """The service refused a request for a reason retrying cannot fix (the message says which)."""

    def __init__(self, status: int, answer: dict):
        super().__init__(f"HTTP {status}: {answer.get('message') or answer}")
        self.status = status
        self.answer = answer


class ServiceUnreachable(httpx.TransportError):
    """The ingest service did not answer at all (after the retries): the message names the URL and what to do."""


def contributor_id_for(handle: str) -> str:
    """A stable 32-hex contributor id for a handle (the protocol never sees the handle itself)."""
    return hashlib.sha256(f"trajforge-contributor:{handle}".encode()).hexdigest()[:32]


def machine_fingerprint() -> str:
    import platform

    return hashlib.sha256(f"{platform.node()}:{uuid.getnode()}".encode()).hexdigest()


def app_version_hash() -> str:
    return crypto.sha256_file(Path(__file__))


@dataclass
class FlushReport:
    delivered: int = 0
    duplicates: int = 0
    rejected: int = 0
    pending: int = 0
    answers: list[dict] = field(default_factory=list)


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
        transport: httpx.BaseTransport | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout_s, transport=transport)
        self.spool = Spool(Path(spool_path).expanduser() if str(spool_path) != ":memory:" else spool_path)
        self.session_timeout_s = session_timeout_s  # session open and close (the specification's 10 s)
        self.offline_probe_s = offline_probe_s
        self._offline_since: float | None = None  # when a delivery last found the service down or busy
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.batch_size = batch_size
        self.max_body_bytes = max_body_bytes
        self._drain_lock = threading.Lock()
        self._drainer: threading.Thread | None = None
        self._stop = threading.Event()

    # ---- HTTP with retries ----------------------------------------------------------------------

    def _request(self, method: str, path: str, body: bytes | None = None, params: dict | None = None,
                 headers: dict[str, str] | None = None, timeout: float | None = None) -> tuple[int, Any]:
        """One call with retries on connection errors, 5xx and 429; raises httpx.TransportError when offline."""
        attempt, options = 0, ({"timeout": timeout} if timeout is not None else {})
        headers = {**({"content-type": "application/json"} if body is not None else {}), **(headers or {})}
        while True:
            try:
                response = self._http.request(method, path, content=body, params=params, headers=headers or None, **options)
                try:
                    answer = response.json() if response.content else {}
                except ValueError:
                    answer = {"message": response.text[:500]}
                delay = _retry_after(answer)
                if not retryable(response.status_code, answer) or attempt >= self.max_retries or delay > self.backoff_max_s:
                    return response.status_code, answer  # a wait longer than backoff_max_s is the caller's to schedule
            except httpx.TransportError:
                if attempt >= self.max_retries:
                    raise
                delay = 0.0
            attempt += 1
            backoff = min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1))
            time.sleep(min(self.backoff_max_s, max(delay, backoff / 2 + random.uniform(0, backoff / 2))))

    def health(self) -> bool:
        try:
            return self._http.get("/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def get(self, path: str, **params: Any) -> Any:
        status, answer = self._request("GET", path, params=params or None)
        if status != 200:
            raise IngestError(status, answer)
        return answer

    def send_events(self, events: list[dict[str, Any]], api_key: str | None = None) -> dict[str, Any]:
        """Starcode telemetry events (`POST /v1/events`, 1,000 at most a request by default), retried like envelopes.
        A resent event is answered as a duplicate, so retrying is safe; a refusal (401, 400, 413) raises IngestError."""
        body = json.dumps({"events": events}, ensure_ascii=False).encode()
        status, answer = self._request("POST", "/v1/events", body, headers={"x-company-api-key": api_key} if api_key else None)
        if status != 200:
            raise IngestError(status, answer)
        return answer

    # ---- sessions -------------------------------------------------------------------------------

    def open_session(
        self,
        *,
        provider: str,
        model: str,
        contributor_id: str,
        session_id: str | None = None,
        machine: str | None = None,
        version_hash: str | None = None,
        groove_version: str = GROOVE_VERSION,
    ) -> "Session":
        """ECDH with the service; needs the service to be reachable (a session cannot be signed offline): raises
        ServiceUnreachable (an httpx.TransportError) when it does not answer, IngestError when it refuses."""
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
        return Session(self, request["session_id"], secret, contributor_id, request["app_version_hash"], provider, model)

    # ---- delivery -------------------------------------------------------------------------------

    def send(self, session_id: str, body: bytes) -> dict | None:
        """Spool one signed envelope, then drain; the server's answer for it, or None if it stays spooled (offline)."""
        spool_id = self.spool.put(session_id, body)
        if not self._back_online():
            return None
        report = self.drain(single=True)
        for answer in report.answers:
            if answer.get("_spool_id") == spool_id:
                return answer
        return None

    def _back_online(self) -> bool:
        """Whether to deliver now: not offline, or /health answers (asked at most every `offline_probe_s` while offline)."""
        since = self._offline_since  # read once: the drainer thread may clear it meanwhile
        due = since is None or _now() - since >= self.offline_probe_s
        if due and since is not None and not self.health():
            self._offline_since, due = _now(), False
        return due

    def drain(self, single: bool = False) -> FlushReport:
        """Deliver spooled envelopes in order until the spool is empty or the service is unreachable (or busy)."""
        report = FlushReport()
        with self._drain_lock:
            while True:
                items = fitting(self.spool.head(1 if single else self.batch_size), self.max_body_bytes)
                if not items:
                    self._offline_since = None
                    break
                try:
                    answers = self._deliver(items)
                except (httpx.TransportError, IngestError) as exc:
                    log.warning("ingest unreachable (%s); %d envelopes stay in the spool", exc, self.spool.pending())
                    self._offline_since = _now()
                    break
                if not self._settle(items, answers, report):
                    self._offline_since = _now()
                    break
        report.pending = self.spool.pending()
        return report

    flush = drain

    def _deliver(self, items: list[Spooled]) -> list[tuple[int, dict]]:
        self.spool.attempted([item.id for item in items])
        if len(items) == 1:
            status, answer = self._request("POST", "/v1/training/ingest", items[0].body)
            if retryable(status, answer):
                raise IngestError(status, answer)
            return [(status, answer)]
        payload = b"[" + b",".join(item.body for item in items) + b"]"
        status, answer = self._request("POST", "/v1/training/ingest:batch", payload)
        if status == 413:  # the service takes smaller batches than this client sends: halve, never refuse the envelopes
            half = len(items) // 2
            log.info("a batch of %d envelopes (%d bytes) was too large for the service; sending it in halves", len(items), len(payload))
            return self._deliver(items[:half]) + self._deliver(items[half:])
        if status != 200:
            if retryable(status, answer):
                raise IngestError(status, answer)
            return [(status, answer)] * len(items)
        return [(result["status"], result) for result in answer["results"]]

    def _settle(self, items: list[Spooled], answers: list[tuple[int, dict]], report: FlushReport) -> bool:
        """Apply the per-envelope answers; False when the head must wait (retryable refusal)."""
        done = []
        for item, (status, answer) in zip(items, answers):
            if status == 200:
                done.append(item.id)
                report.duplicates += bool(answer.get("duplicate"))
                report.delivered += not answer.get("duplicate")
            elif retryable(status, answer):
                break
            else:
                log.warning("envelope of %s refused for good: %s", item.session_id, answer.get("message"))
                self.spool.reject(item, status, answer)
                report.rejected += 1
            report.answers.append({**answer, "_spool_id": item.id, "status": status})
        else:
            self.spool.delivered(done)
            return True
        self.spool.delivered(done)
        return bool(done)

    def start_background_drain(self, interval_s: float = 60.0) -> None:
        """Every `interval_s`, if envelopes are waiting and /health answers, deliver them."""
        if self._drainer is not None:
            return

        def loop() -> None:
            while not self._stop.wait(interval_s):
                if self.spool.pending() and self.health():
                    self.drain()

        self._drainer = threading.Thread(target=loop, name="trajforge-spool-drain", daemon=True)
        self._drainer.start()

    def close(self) -> None:
        self._stop.set()
        if self._drainer is not None:
            self._drainer.join(timeout=5)
        if str(self.spool.path) == ":memory:" and self.spool.pending():
            log.warning("%d envelopes were not delivered and are lost with this client's in-memory spool: give IngestClient "
                        "a spool_path to keep them for the next run", self.spool.pending())
        self._http.close()
        self.spool.close()

    def __enter__(self) -> "IngestClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
