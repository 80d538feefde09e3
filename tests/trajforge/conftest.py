"""Fixtures of the client SDK's tests: its retry sleeps recorded instead of slept, and its offline clock set by hand."""

from __future__ import annotations

import pytest


@pytest.fixture
def sleeps(monkeypatch):
    """The waits the client's transport would have slept, in order (it sleeps none)."""
    waits: list[float] = []
    monkeypatch.setattr("trajforge.client.transport.time.sleep", waits.append)
    return waits


@pytest.fixture
def clock(monkeypatch):
    """The clock the client's offline mode reads: `clock[0] += 61` moves it past the probe interval."""
    now = [1000.0]
    monkeypatch.setattr("trajforge.client.outbox._now", lambda: now[0])
    return now
