"""Steps recorded one at a time (`Session.record`) and the chunk policy that sends them.

A session buffers recorded steps and sends them as one CHUNK when `chunk_size` are buffered (the specification's
CHUNK_SIZE, 200) or when its first buffered step is `chunk_timeout_s` old (CHUNK_TIMEOUT_MS, 5 min): checked at each
`record`, and, unless the client was made with `chunk_timer=False`, by one background thread per client (`ChunkTimer`)
that sends an idle session's steps at that age. `Session.flush`, `close` and `send_chunk` send the buffered steps
first; `IngestClient.close` sends every session's (as a chunk: it does not close the sessions).

Each step is checked when it is recorded (the envelope schema's step rules, JSON, its size), so a bad one is refused
alone with an error naming the field, never taking the chunk of steps recorded before it with it. A step without
`step` gets the next number, one without `timestamp` the current time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from trajforge.contracts.envelope import EnvelopeRejected, Step, rejection_from
from trajforge.jsjson import js_stringify

if TYPE_CHECKING:
    from trajforge.client.session import Session

log = logging.getLogger("trajforge.client")


def now() -> float:
    """The clock of the chunk timeout (tests set it by hand)."""
    return time.monotonic()


def checked_step(step: Mapping[str, Any], number: int, room: int) -> dict[str, Any]:
    """A copy of `step` as it will be sent (`number` as its `step` if it has none, now as its `timestamp`), or
    EnvelopeRejected naming what the service would refuse: a schema rule, a value JSON cannot carry, or a size past
    `room` (the bytes one envelope has for a step)."""
    if not isinstance(step, Mapping):
        raise EnvelopeRejected("", "type_error", f"a step is a dict of its fields (got {type(step).__name__}); not recorded")
    filled = dict(step) if "step" in step else {"step": number, **step}
    filled.setdefault("timestamp", round(time.time(), 3))
    try:
        Step.model_validate(filled)
    except ValidationError as exc:
        problem = rejection_from(exc)
        why = str(problem).removeprefix(f"{problem.field}: ")
        raise EnvelopeRejected(problem.field, problem.rule, f"{why}; step {filled.get('step')!r} not recorded "
                               "(the steps recorded before it are kept)") from None
    try:
        size = len(js_stringify(filled))
    except (TypeError, ValueError) as exc:
        raise EnvelopeRejected("", "json", f"{exc}; step {filled['step']} not recorded") from None
    if size > room:
        raise EnvelopeRejected("", "too_large", f"step {filled['step']} is {size} bytes as JSON, more than one envelope "
                               f"has room for ({room} bytes within max_body_bytes); not recorded")
    return filled


class ChunkTimer:
    """The sessions of a client holding recorded steps, each with the time its chunk is due; with `thread`, a daemon
    thread (started at the first step buffered) sends each one's chunk when it is due. A send that fails (the spool
    full, ...) keeps the steps buffered and is tried again `retry_s` later."""

    def __init__(self, *, thread: bool, retry_s: float = 60.0):
        self.thread, self.retry_s = thread, retry_s
        self._due: dict[Session, float] = {}
        self._changed = threading.Condition()
        self._worker: threading.Thread | None = None
        self._stopped = False

    def arm(self, session: Session, due: float | None) -> None:
        """`session` holds buffered steps; its chunk is due at `due` (None: only when full)."""
        with self._changed:
            self._due[session] = float("inf") if due is None else due
            if self.thread and self._worker is None and not self._stopped:
                self._worker = threading.Thread(target=self._run, name="trajforge-chunk-timer", daemon=True)
                self._worker.start()
            self._changed.notify()

    def disarm(self, session: Session) -> None:
        with self._changed:
            self._due.pop(session, None)

    def holding(self) -> list[Session]:
        with self._changed:
            return list(self._due)

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._stopped:
                    current = now()
                    due = [session for session, at in self._due.items() if at <= current]
                    if due:
                        break
                    soonest = min(self._due.values(), default=float("inf"))
                    self._changed.wait(None if soonest == float("inf") else soonest - current)
                if self._stopped:
                    return
            for session in due:
                try:
                    session.flush_if_due()
                except Exception as exc:  # noqa: BLE001 - a timer thread has no caller to raise to: the steps stay buffered
                    log.warning("the due chunk of %s was not sent (%s); its steps stay buffered, tried again in %.0f s",
                                session.session_id, exc, self.retry_s)
                    with self._changed:
                        if session in self._due:
                            self._due[session] = now() + self.retry_s

    def stop(self) -> None:
        with self._changed:
            self._stopped = True
            self._changed.notify()
        if self._worker is not None:
            self._worker.join(timeout=5)
