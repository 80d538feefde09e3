"""What the service's answers mean to the client: which are worth sending again, how long it asked to wait."""

from __future__ import annotations

import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from trajforge.spool import SpoolFull

RETRYABLE = {408, 425, 429, 500, 502, 503, 504, 507}  # 507: the service's storage is full, nothing was stored


class IngestError(RuntimeError):
    """The service refused a request for a reason retrying cannot fix (the message says which)."""

    def __init__(self, status: int, answer: dict):
        super().__init__(f"HTTP {status}: {answer.get('message') or answer}")
        self.status = status
        self.answer = answer


class QueueFull(SpoolFull):
    """Envelopes refused because the spool already holds `max_queue_size` waiting for the service (the specification's
    MAX_QUEUE_SIZE, 10,000): none of them was spooled (their sequences are free again) and nothing spooled was dropped."""

    def __init__(self, full: SpoolFull, base_url: str):
        super().__init__(full.pending, full.capacity, full.refused)
        self.args = (
            f"the client's spool already holds {full.pending} envelopes waiting for the ingest service at {base_url} "
            f"(max_queue_size={full.capacity}), so {full.refused} more were not taken; nothing already spooled was dropped. "
            "Deliver the backlog with client.flush() once the service answers (or start_background_drain()), then send "
            "again; or give IngestClient a larger max_queue_size",
        )


class ServiceUnreachable(httpx.TransportError):
    """The ingest service did not answer at all (after the retries): the message names the URL and what to do."""


def reason(answer: Any) -> str:
    """What an answer says went wrong, for a log: its `message`, else its `error` (or `detail`, as a
    proxy or framework writes it), else the whole answer."""
    if isinstance(answer, dict):
        for key in ("message", "error", "detail"):
            if answer.get(key):
                return str(answer[key])
    return str(answer) if answer not in ({}, None) else "no reason given"


def retryable(status: int, answer: Any) -> bool:
    """Worth sending again later: the service is busy or down, not refusing this envelope for good."""
    refused_for_good = isinstance(answer, dict) and answer.get("error") == "session_envelope_limit"
    return status in RETRYABLE and not refused_for_good


def retry_after(answer: Any) -> float:
    """The wait the service asked for (`retryAfter`, seconds), 0 when it named none."""
    try:
        return max(0.0, float(answer.get("retryAfter", 0))) if isinstance(answer, dict) else 0.0
    except (TypeError, ValueError):
        return 0.0


def read_answer(response: httpx.Response) -> Any:
    """The JSON answer of a response (`{}` when empty, `{"message": text}` when not JSON), with the wait an HTTP
    `Retry-After` header asks for as `retryAfter` when the body names none (a proxy's 503, for one)."""
    try:
        answer = response.json() if response.content else {}
    except ValueError:
        answer = {"message": response.text[:500]}
    wait = header_retry_after(response.headers) if response.status_code in RETRYABLE else None
    if isinstance(answer, dict) and "retryAfter" not in answer and wait is not None:
        answer["retryAfter"] = wait
    return answer


def header_retry_after(headers: Mapping[str, str]) -> float | None:
    """An HTTP `Retry-After` header in seconds (delay-seconds or an HTTP date), None when absent or unreadable."""
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError):
        return None

