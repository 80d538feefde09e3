"""Delivery of the spooled envelopes, oldest first: the batch endpoint for many, the single one for one, and the
offline mode (once a delivery finds the service down or busy, sends only spool until /health answers again)."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import httpx

from trajforge.client.batching import fitting
from trajforge.client.errors import IngestError, retryable
from trajforge.client.transport import Transport
from trajforge.spool import Spool, Spooled

log = logging.getLogger("trajforge.client")


def _now() -> float:
    return time.monotonic()


@dataclass
class FlushReport:
    delivered: int = 0
    duplicates: int = 0
    rejected: int = 0
    pending: int = 0
    answers: list[dict] = field(default_factory=list)


class Outbox:
    def __init__(self, spool: Spool, transport: Transport, *, batch_size: int, max_body_bytes: int, offline_probe_s: float):
        self.spool = spool
        self.transport = transport
        self.batch_size = batch_size
        self.max_body_bytes = max_body_bytes
        self.offline_probe_s = offline_probe_s
        self.offline_since: float | None = None  # when a delivery last found the service down or busy
        self._lock = threading.Lock()

    def back_online(self) -> bool:
        """Whether to deliver now: not offline, or /health answers (asked at most every `offline_probe_s` while offline)."""
        since = self.offline_since  # read once: the drainer thread may clear it meanwhile
        due = since is None or _now() - since >= self.offline_probe_s
        if due and since is not None and not self.transport.health():
            self.offline_since, due = _now(), False
        return due

    def drain(self, single: bool = False) -> FlushReport:
        """Deliver spooled envelopes in order until the spool is empty or the service is unreachable (or busy)."""
        report = FlushReport()
        with self._lock:
            while True:
                items = fitting(self.spool.head(1 if single else self.batch_size), self.max_body_bytes)
                if not items:
                    self.offline_since = None
                    break
                try:
                    answers = self._deliver(items)
                except (httpx.TransportError, IngestError) as exc:
                    log.warning("ingest unreachable (%s); %d envelopes stay in the spool", exc, self.spool.pending())
                    self.offline_since = _now()
                    break
                if not self._settle(items, answers, report):
                    self.offline_since = _now()
                    break
        report.pending = self.spool.pending()
        return report

    def _deliver(self, items: list[Spooled]) -> list[tuple[int, dict]]:
        self.spool.attempted([item.id for item in items])
        if len(items) == 1:
            status, answer = self.transport.request("POST", "/v1/training/ingest", items[0].body)
            if retryable(status, answer):
                raise IngestError(status, answer)
            return [(status, answer)]
        payload = b"[" + b",".join(item.body for item in items) + b"]"
        status, answer = self.transport.request("POST", "/v1/training/ingest:batch", payload)
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
