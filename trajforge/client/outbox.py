"""Delivery of the spooled envelopes, oldest first, and the offline mode.

A drain sends the whole backlog, in order, in batches that fit the service's limits (`/v1/training/ingest:batch`,
500 envelopes and 5 MB a request; a lone envelope goes to `/v1/training/ingest`). A batch the service refuses as a
whole for a reason other than being busy (413, a 400 for one unreadable body, ...) is halved until the refusal
comes for one envelope alone, so one bad envelope is set aside and never takes the others with it; a service with
no batch endpoint (404, 405) gets single envelopes from then on. 5xx, 429 and no answer leave everything in the
spool: from then on sends only spool until the wait the service asked for (Retry-After) is over or, when it named
none, /health answers (asked at most every `offline_probe_s`).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import httpx

from trajforge.client.batching import fitting
from trajforge.client.errors import IngestError, QueueFull, reason, retry_after, retryable
from trajforge.client.transport import Transport
from trajforge.spool import Spool, Spooled, SpoolFull

log = logging.getLogger("trajforge.client")
SINGLE, BATCH = "/v1/training/ingest", "/v1/training/ingest:batch"


def _now() -> float:
    return time.monotonic()


@dataclass
class FlushReport:
    delivered: int = 0
    duplicates: int = 0
    rejected: int = 0
    pending: int = 0
    answers: list[dict] = field(default_factory=list)


class Busy(IngestError):
    """The service is busy or failing (5xx, 429): the envelopes wait in the spool."""


@dataclass(frozen=True)
class Refused:
    """A batch request refused as a whole (not busy): its envelopes are sent again in smaller requests."""

    status: int
    answer: dict


class Outbox:
    def __init__(self, spool: Spool, transport: Transport, *, batch_size: int, max_body_bytes: int, offline_probe_s: float,
                 max_queue_size: int | None = None):
        self.spool = spool
        self.max_queue_size = max_queue_size  # envelopes the spool may hold (None: no limit); more are refused (QueueFull)
        self.transport = transport
        self.batch_size = batch_size
        self.max_body_bytes = max_body_bytes
        self.offline_probe_s = offline_probe_s
        self.offline_since: float | None = None  # when a delivery last found the service down or busy
        self.retry_at: float | None = None  # when the service said to come back (its Retry-After), if it did
        self.batch_endpoint = True  # False once the service answered 404/405 there
        self._lock = threading.Lock()  # one drain at a time
        self._answers_lock = threading.Lock()
        self._waiting: dict[int, dict | None] = {}  # spool id -> its answer, for sends waiting on one

    # ---- sends ----------------------------------------------------------------------------------

    def put(self, session_id: str, bodies: list[bytes]) -> list[int]:
        """Spool envelopes (in one transaction, in this order) whose answers a sender will wait for. All or none: when
        the spool holds `max_queue_size` (and a drain, if the service may be back, does not make room), QueueFull."""
        try:
            return self._put(session_id, bodies)
        except SpoolFull as full:
            if not self.back_online():
                raise QueueFull(full, self.transport.base_url) from None
        self.drain()
        try:
            return self._put(session_id, bodies)
        except SpoolFull as full:
            raise QueueFull(full, self.transport.base_url) from None

    def _put(self, session_id: str, bodies: list[bytes]) -> list[int]:
        with self._answers_lock:
            ids = self.spool.put_many(session_id, bodies, self.max_queue_size)
            self._waiting.update(dict.fromkeys(ids))
        return ids

    def deliver(self, ids: list[int]) -> list[dict | None]:
        """Drain if the service is not known to be down, then the answers to these envelopes (None: still spooled),
        whichever drain, this thread's or another's, delivered them."""
        asked = _now()
        if self.back_online():
            self.drain(unless_offline_since=asked)
        with self._answers_lock:
            return [self._waiting.pop(spool_id, None) for spool_id in ids]

    def back_online(self) -> bool:
        """Whether to deliver now: not offline, past the service's Retry-After, or /health answers (asked at most every
        `offline_probe_s` while offline)."""
        since, until = self.offline_since, self.retry_at  # read once: the drainer thread may clear them meanwhile
        if since is None or (until is not None and _now() >= until):
            return True
        if _now() - since < self.offline_probe_s:
            return False
        if not self.transport.health():
            self.offline_since = _now()
            return False
        return True

    # ---- drains ---------------------------------------------------------------------------------

    def drain(self, retries: int | None = None, unless_offline_since: float | None = None) -> FlushReport:
        """Deliver the spooled envelopes in order until the spool is empty or the service is down or busy; with
        `unless_offline_since`, not if another drain found the service down since then (while this one waited)."""
        report = FlushReport()
        with self._lock:
            went_offline = self.offline_since
            if unless_offline_since is not None and went_offline is not None and went_offline > unless_offline_since:
                report.pending = self.spool.pending()
                return report
            cap = self._cap()
            while True:
                items = fitting(self.spool.head(cap), self.max_body_bytes)
                if not items:
                    if went_offline is not None:
                        log.info("ingest answers again: the spool's backlog is delivered (%d envelopes this drain, "
                                 "%d duplicates, %d set aside)", report.delivered, report.duplicates, report.rejected)
                    self.offline_since = self.retry_at = None
                    break
                try:
                    answers = self._post(items, retries)
                except (httpx.TransportError, Busy) as exc:
                    self._wait(exc, retry_after(getattr(exc, "answer", None)) or None)
                    break
                if isinstance(answers, Refused):
                    cap = self._smaller(items, answers)
                    continue
                if not self._settle(items, answers, report):
                    self._wait("an envelope was answered busy", None)
                    break
                cap = min(self._cap(), cap * 2)  # back to full batches step by step after a refused one
        report.pending = self.spool.pending()
        return report

    def _cap(self) -> int:
        return self.batch_size if self.batch_endpoint else 1

    def _wait(self, why: object, seconds: float | None) -> None:
        log.warning("ingest unreachable or busy (%s); %d envelopes stay in the spool", why, self.spool.pending())
        self.offline_since = _now()
        self.retry_at = None if seconds is None else self.offline_since + seconds

    def _smaller(self, items: list[Spooled], refused: Refused) -> int:
        """How many envelopes to send next after a batch of `items` was refused as a whole."""
        if refused.status in (404, 405):
            log.info("the service has no batch endpoint (HTTP %d): envelopes go one per request", refused.status)
            self.batch_endpoint = False
            return 1
        log.info("a batch of %d envelopes was refused whole (HTTP %d: %s); sending it in halves", len(items), refused.status,
                 reason(refused.answer))
        return max(1, len(items) // 2)

    def _post(self, items: list[Spooled], retries: int | None) -> list[tuple[int, dict]] | Refused:
        self.spool.attempted([item.id for item in items])
        if len(items) == 1:
            status, answer = self.transport.request("POST", SINGLE, items[0].body, retries=retries)
            if retryable(status, answer):
                raise Busy(status, answer)
            return [(status, answer)]
        payload = b"[" + b",".join(item.body for item in items) + b"]"
        status, answer = self.transport.request("POST", BATCH, payload, retries=retries)
        if retryable(status, answer):
            raise Busy(status, answer)
        if status != 200:
            return Refused(status, answer)
        results = answer.get("results") if isinstance(answer, dict) else None
        if not isinstance(results, list) or len(results) != len(items):
            raise Busy(502, {"message": f"the batch answer carries no result for each of the {len(items)} envelopes"})
        return [(result.get("status", 502), result) for result in results]

    def _settle(self, items: list[Spooled], answers: list[tuple[int, dict]], report: FlushReport) -> bool:
        """Apply the per-envelope answers; False when the head must wait (retryable refusal) and nothing was done."""
        done, set_aside = [], 0
        for item, (status, answer) in zip(items, answers):
            if status == 200:
                done.append(item.id)
                report.duplicates += bool(answer.get("duplicate"))
                report.delivered += not answer.get("duplicate")
            elif retryable(status, answer):
                break
            else:
                log.warning("envelope of %s refused for good (HTTP %d: %s): set aside in the spool's rejected table",
                            item.session_id, status, reason(answer))
                self.spool.reject(item, status, answer)
                report.rejected += 1
                set_aside += 1
            answered = {**answer, "_spool_id": item.id, "status": status}
            report.answers.append(answered)
            with self._answers_lock:
                if item.id in self._waiting:
                    self._waiting[item.id] = answered
        else:
            self.spool.delivered(done)
            return True
        self.spool.delivered(done)
        return bool(done or set_aside)
