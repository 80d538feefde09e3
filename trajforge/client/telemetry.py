"""Starcode's telemetry SDK (seed 000) in Python: events checked, redacted, spooled durably, flushed in batches to
`POST /v1/events`.

    with TelemetryClient("http://127.0.0.1:8000", org_id="acme", api_key=os.environ["STARCODE_API_KEY"]) as telemetry:
        telemetry.emit("conversation.turn", {"user_message": "...", "assistant_message": "...", "tool_results": [...]},
                       session_id="s-42")
        telemetry.flush()              # or flush_every_s=30: a background thread does it

- `emit` makes the event (`event_id` a new UUID, `event_type`, `org_id`, `session_id`, `timestamp` now in ISO 8601,
  `payload`) and checks it with the service's own contract, so one the service would refuse raises `EventRejected`
  naming the field and nothing is spooled (so does one too large for a request even alone: `payload`, `too_large`).
  `record` takes a whole event (another SDK's) the same way.
- Redaction before anything is written (seed 000: "before persistence/upload"): every text of the payload and of any
  extra field goes through the Redactor the build uses (`trajforge.redaction`); the event's ids, type and time are kept.
  `TELEMETRY_REDACT=false` (Starcode's switch) or `redact=False` keeps them verbatim, with a warning.
- The spool is the client's durable SQLite outbox (`trajforge.spool`, fsync'd), `.telemetry/events.db` by default: an
  emitted event survives a crash or a restart of the agent, and waits there while the service is down. It holds at
  most `max_queue_size` events (10,000, the client's MAX_QUEUE_SIZE); past that `emit` raises QueueFull and nothing
  spooled is dropped.
- `flush` sends the spooled events oldest first, in requests of at most 1,000 events and 5 MB, each retried with
  backoff; what the service took (or had already: a resent event is a duplicate) leaves the spool. A request refused
  for some of its events (400 names their indexes; a 413 to one event alone, while a 413 to several sends them in
  halves) moves those to the spool's `rejected` table and sends the rest; a
  refused key (401) raises IngestError and keeps everything; no answer keeps everything for the next flush.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
from pydantic import ValidationError

from trajforge import constants as c
from trajforge.client.batching import pieces
from trajforge.client.errors import IngestError, QueueFull
from trajforge.client.transport import Transport
from trajforge.contracts.envelope import EnvelopeRejected, rejection_from
from trajforge.contracts.events import parse_event
from trajforge.spool import Spool, Spooled, SpoolFull

log = logging.getLogger("trajforge.client")
DEFAULT_SPOOL = ".telemetry/events.db"
IDENTITY = ("event_id", "eventId", "id", "event_type", "type", "eventType", "org_id", "orgId", "org", "session_id", "sessionId", "timestamp")
"""Fields redaction leaves alone: what the service files and deduplicates the event by."""
QUEUE = "events"  # the spool's session column: one queue of events, oldest first
_ENVELOPE = b'{"events":[]}'  # what a request adds around its events


class EventRejected(EnvelopeRejected):
    """An event the service would refuse: `field` and `rule` say why; it was not spooled."""


@dataclass(frozen=True)
class TelemetryFlush:
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0  # moved to the spool's `rejected` table
    pending: int = 0  # still spooled (the service did not answer, or a flush raised)


class TelemetryClient:
    def __init__(self, base_url: str, *, org_id: str | None = None, api_key: str | None = None, spool_path: str | Path = DEFAULT_SPOOL,
                 redact: bool | None = None, max_queue_size: int = c.MAX_QUEUE_SIZE, max_events_per_request: int = 1000,
                 max_body_bytes: int = c.MAX_BODY_BYTES, timeout_s: float = 30.0, max_retries: int = 5, backoff_base_s: float = 1.0,
                 backoff_max_s: float = 60.0, flush_every_s: float | None = None, transport: httpx.BaseTransport | None = None,
                 verify: bool | str = True):
        from trajforge.redaction.switch import REDACT_ENV, redaction_on

        self.base_url, self.org_id, self.api_key = base_url.rstrip("/"), org_id, api_key
        self.max_queue_size, self.max_events_per_request, self.max_body_bytes = max_queue_size, max_events_per_request, max_body_bytes
        self.transport = Transport(self.base_url, timeout_s=timeout_s, max_retries=max_retries, backoff_base_s=backoff_base_s,
                                   backoff_max_s=backoff_max_s, transport=transport, verify=verify)
        path = str(spool_path)
        if path != ":memory:":
            Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        self.spool = Spool(Path(path).expanduser() if path != ":memory:" else path)
        self.redact = redaction_on() if redact is None else redact
        self._redactor = None
        if not self.redact:
            log.warning("telemetry redaction is off (%s): events are spooled and sent with any secrets and personal data in them",
                        f"{REDACT_ENV}=false" if redact is None else "redact=False")
        self._flushing = threading.Lock()
        self._stop = threading.Event()
        self._flusher = None
        if flush_every_s is not None:
            self._flusher = threading.Thread(target=self._flush_every, args=(flush_every_s,), name="trajforge-telemetry-flush", daemon=True)
            self._flusher.start()

    # ---- events in ------------------------------------------------------------------------------

    def emit(self, event_type: str, payload: Mapping[str, Any] | None = None, *, session_id: str | None = None,
             event_id: str | None = None, timestamp: str | None = None, **fields: Any) -> str:
        """Check, redact and spool one event; its event_id. EventRejected (not spooled) when the service would refuse it,
        QueueFull when the spool already holds `max_queue_size` events."""
        event = {"event_id": event_id or str(uuid.uuid4()), "event_type": event_type, **({"org_id": self.org_id} if self.org_id else {}),
                 **({"session_id": session_id} if session_id else {}),
                 "timestamp": timestamp or datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                 "payload": dict(payload or {}), **fields}
        return self.record(event)

    def record(self, event: Mapping[str, Any]) -> str:
        """`emit` for a whole event as another SDK makes it (its own ids and names kept; `org_id` added when it has none)."""
        event = dict(event)
        if self.org_id and not any(name in event for name in ("org_id", "orgId", "org")):
            event["org_id"] = self.org_id
        try:
            checked = parse_event(event)
        except (ValidationError, EnvelopeRejected) as exc:
            problem = rejection_from(exc) if isinstance(exc, ValidationError) else exc
            raise EventRejected(problem.field, problem.rule, f"{str(problem).removeprefix(f'{problem.field}: ')}; the event was not spooled") from None
        except TypeError as exc:
            raise EventRejected("", "type_error", f"{exc}; the event was not spooled") from None
        if checked.event_id is None:
            event["event_id"] = str(uuid.uuid4())  # so that a resend after a lost answer is recognised as a duplicate
        body = self._redacted(event)
        try:
            body_bytes = json.dumps(body, ensure_ascii=False).encode()
        except (TypeError, ValueError) as exc:
            raise EventRejected("", "json", f"{exc}; the event was not spooled") from None
        if len(body_bytes) + len(_ENVELOPE) > self.max_body_bytes:  # the service would answer 413 to it, alone or not
            raise EventRejected("payload", "too_large", f"the event is {len(body_bytes)} bytes, over the {self.max_body_bytes}-byte request "
                                "limit of POST /v1/events; the event was not spooled")
        try:
            self.spool.put_many(QUEUE, [body_bytes], self.max_queue_size)
        except SpoolFull as full:
            raise QueueFull(full, self.base_url) from None
        return str(body.get("event_id") or checked.event_id)

    def _redacted(self, event: dict[str, Any]) -> dict[str, Any]:
        if not self.redact:
            return event
        if self._redactor is None:
            from trajforge.redaction import Redactor

            self._redactor = Redactor()
        kept = {name: value for name, value in event.items() if name in IDENTITY}
        rest, counts = self._redactor.redact_tree({name: value for name, value in event.items() if name not in IDENTITY})
        if counts:
            log.debug("telemetry event %s: redacted %s", kept.get("event_id"), dict(counts))
        return {**kept, **rest}

    # ---- events out -----------------------------------------------------------------------------

    def pending(self) -> int:
        return self.spool.pending()

    def flush(self) -> TelemetryFlush:
        """Send every spooled event (see the module's doc); what happened."""
        accepted = duplicates = rejected = 0
        with self._flushing:
            try:
                while items := self.spool.head(self.max_events_per_request):
                    for part in pieces(items, lambda item: item.body, self.max_events_per_request, self.max_body_bytes - len(_ENVELOPE)):
                        took, again, refused = self._send(part)
                        accepted, duplicates, rejected = accepted + took, duplicates + again, rejected + refused
            except httpx.TransportError as exc:
                log.warning("the ingest service at %s did not answer (%s): %d telemetry events stay spooled for the next flush",
                            self.base_url, exc, self.spool.pending())
        return TelemetryFlush(accepted, duplicates, rejected, self.spool.pending())

    def _send(self, part: list[Spooled]) -> tuple[int, int, int]:
        body = b'{"events":[' + b",".join(item.body for item in part) + b"]}"
        headers = {"x-company-api-key": self.api_key} if self.api_key else None
        status, answer = self.transport.request("POST", "/v1/events", body, headers=headers)
        if status == 200:
            self.spool.delivered([item.id for item in part])
            return int(answer.get("accepted", 0)), int(answer.get("duplicates", 0)), 0
        refused = {item.get("index") for item in (answer.get("rejected") or []) if isinstance(item, dict)} if isinstance(answer, dict) else set()
        if status == 413 and len(part) > 1:  # this service takes smaller requests than the client was told: halves
            halves = self._send(part[: len(part) // 2]), self._send(part[len(part) // 2 :])
            return tuple(sum(counts) for counts in zip(*halves))  # type: ignore[return-value]
        if status == 413:  # too large even alone for this service (spooled under a larger limit than its own)
            refused = {0}
        if status in (400, 413) and refused and refused <= set(range(len(part))):
            for index in sorted(refused):
                self.spool.reject(part[index], status, answer)
            log.error("the ingest service refused %d telemetry events (%s); moved to the spool's rejected table",
                      len(refused), (answer or {}).get("message"))
            return 0, 0, len(refused)  # the others go with the next request
        raise IngestError(status, answer)

    def rejections(self) -> list[dict]:
        return self.spool.rejections()

    def _flush_every(self, seconds: float) -> None:
        while not self._stop.wait(seconds):
            try:
                self.flush()
            except Exception as exc:  # noqa: BLE001 - a background flush has no caller: the events stay spooled
                log.error("background telemetry flush failed (%s); the events stay spooled", exc)

    def close(self, flush: bool = True) -> None:
        """Stop the background flush, send what is spooled (unless `flush=False`), close the spool. Once."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join(timeout=5)
        if flush:
            try:
                self.flush()
            except IngestError as exc:
                log.error("telemetry flush at close refused (%s): %d events stay in the spool", exc, self.spool.pending())
        self.transport.close()
        self.spool.close()

    def __enter__(self) -> TelemetryClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
