"""The generation calls and streams a `GenerationActor` is running, by id, so that a caller that went away stops its own.

A cancellation can reach the actor before the call it names: the call may still wait in Ray's queue behind the calls that
fill the actor's default concurrency group, while `cancel_stream` runs at once in the control group. Such a cancellation
is remembered (the latest `EARLY_LIMIT` ids), and the call, once it opens, finds itself cancelled and is dropped before it
reaches the engine, rather than generating its whole answer for a client that is gone.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

EARLY_LIMIT = 4096
"""Cancellations kept for calls not seen yet: a cancel for a call that had already ended is never claimed, so the oldest go."""


class Call:
    """A running stream or cancellable call: the flag that stops its generation, and whether its cancellation was counted."""

    def __init__(self, counter: str) -> None:
        self.cancelled = threading.Event()
        self.counter = counter  # the health count its cancellation adds to
        self.counted = False


class CallRegistry:
    """`open` a call by id, `close` it when it ends, `cancel` it (before or after it opened); `count` gets the name of the
    health counter to add one to, once per cancelled call."""

    def __init__(self, count: Callable[[str], None]) -> None:
        self._count = count
        self._lock = threading.Lock()
        self._running: dict[str, Call] = {}
        self._early: OrderedDict[str, None] = OrderedDict()

    def open(self, call_id: str, counter: str) -> Call:
        """The call, registered; already cancelled (and counted) when its cancellation came first."""
        call = Call(counter)
        with self._lock:
            early = call_id in self._early
            self._early.pop(call_id, None)
            self._running[call_id] = call
        if early:
            self.cancelled(call)
        return call

    def close(self, call_id: str) -> None:
        with self._lock:
            self._running.pop(call_id, None)

    def cancel(self, call_id: str) -> bool:
        """Stop the call; True when it was running, False when it has not opened yet (it is dropped when it does)."""
        with self._lock:
            call = self._running.get(call_id)
            if call is None:
                self._early[call_id] = None
                while len(self._early) > EARLY_LIMIT:
                    self._early.popitem(last=False)
                return False
        self.cancelled(call)
        return True

    def cancelled(self, call: Call) -> None:
        """Sets the call's flag and counts it once, whichever notices first: `cancel`, or Ray closing a stream's generator."""
        with self._lock:
            counted, call.counted = call.counted, True
        call.cancelled.set()
        if not counted:
            self._count(call.counter)
