"""A full disk under the ingest service, injected at the write layer (CI cannot mount a small tmpfs): every write
endpoint answers 507 with Retry-After and acknowledges nothing; once space is back the same requests are taken, once."""

from __future__ import annotations

import errno
import os
import uuid
from pathlib import Path

import pytest
from helpers import CONTRIBUTOR, in_process_ingest, steps
from starlette.testclient import TestClient

from serve_apps.ingest import events as events_module
from serve_apps.ingest.settings import IngestSettings
from trajforge import crypto
from trajforge.client import Session
from trajforge.raw_segments import SegmentWriter


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture
def ingest(tmp_path: Path):
    with in_process_ingest(IngestSettings(lake=tmp_path / "lake", key_file=tmp_path / "test.key")) as http:
        yield http


def _session(http: TestClient) -> Session:
    public, private = crypto.generate_keypair()
    session_id = f"sess_{uuid.uuid4()}"
    answer = http.post("/v1/sessions/open", json={"session_id": session_id, "public_key": public, "provider": "codex", "model": "m",
                                                  "machine_fingerprint": "m" * 64, "app_version_hash": "a" * 64, "groove_version": "0.27.113"})
    assert answer.status_code == 200, answer.text
    secret = crypto.derive_shared_secret(private, answer.json()["server_public_key"])
    return Session(None, session_id, secret, CONTRIBUTOR, "a" * 64, "codex", "m")


def _assert_storage_full(response) -> None:
    assert response.status_code == 507, response.text
    assert response.json()["error"] == "storage_full" and "full" in response.json()["message"]
    assert int(response.headers["retry-after"]) == response.json()["retryAfter"] > 0


def test_an_envelope_refused_on_a_full_disk_is_507_and_taken_once_when_space_is_back(ingest, monkeypatch):
    session = _session(ingest)
    first = session.chunk(steps(2))
    assert ingest.post("/v1/training/ingest", content=first).status_code == 200
    refused = session.chunk(steps(2, start=3))
    with monkeypatch.context() as patch:
        patch.setattr(SegmentWriter, "append", _no_space)
        _assert_storage_full(ingest.post("/v1/training/ingest", content=refused))
        _assert_storage_full(ingest.post("/v1/training/ingest:batch", content=b"[" + refused + b"]"))
        assert ingest.get("/health").status_code == 200
    again = ingest.post("/v1/training/ingest", content=refused).json()
    assert (again["accepted"], again["duplicate"], "gap" in again) == (True, False, False)
    assert ingest.post("/v1/training/ingest", content=refused).json()["duplicate"] is True
    assert ingest.post("/v1/training/ingest", content=session.chunk(steps(1, start=5))).json().get("gap") is None
    assert ingest.get("/v1/stats/summary").json()["totalEnvelopes"] == 3


def test_telemetry_events_refused_on_a_full_disk_are_507_and_accepted_once_later(ingest, monkeypatch):
    event = {"event_type": "model.error", "event_id": str(uuid.uuid4()), "org_id": "acme", "payload": {"message": "boom"}}
    with monkeypatch.context() as patch:
        patch.setattr(events_module.os, "fsync", _no_space)
        _assert_storage_full(ingest.post("/v1/events", json=[event]))
    assert ingest.post("/v1/events", json=[event]).json()["accepted"] == 1
    assert ingest.post("/v1/events", json=[event]).json()["duplicates"] == 1


def test_a_session_open_on_a_full_registry_is_507(ingest, monkeypatch):
    import sqlite3

    def full_registry(*args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    with monkeypatch.context() as patch:
        patch.setattr("serve_apps.ingest.registry.sessions_opened_since", full_registry)
        public, _ = crypto.generate_keypair()
        _assert_storage_full(ingest.post("/v1/sessions/open", json={"session_id": "sess_x", "public_key": public, "provider": "codex", "model": "m",
                                                                    "machine_fingerprint": "m" * 64, "app_version_hash": "a" * 64, "groove_version": "0.27.113"}))


def _line_then_full_registry(real):
    """The lines reach the disk, then the registry's write fails as on a full disk (SQLite pages go out at the commit)."""
    import sqlite3

    def append(path, data):
        real(path, data)
        raise sqlite3.OperationalError("database or disk is full")

    return append


def _raw_lines(root: Path) -> list[dict]:
    import json

    return [json.loads(line) for path in sorted(root.rglob("*.jsonl")) for line in path.read_bytes().splitlines()]


def test_events_answered_507_leave_no_line_behind_that_a_build_would_take(ingest, monkeypatch, tmp_path):
    event = {"event_type": "model.error", "event_id": str(uuid.uuid4()), "org_id": "acme", "payload": {"message": "boom"}}
    assert ingest.post("/v1/events", json=[{**event, "event_id": str(uuid.uuid4())}]).json()["accepted"] == 1
    with monkeypatch.context() as patch:
        patch.setattr(events_module, "append_durably", _line_then_full_registry(events_module.append_durably))
        _assert_storage_full(ingest.post("/v1/events", json=[event]))
    assert [line["event_id"] for line in _raw_lines(tmp_path / "lake" / "raw" / "events")].count(event["event_id"]) == 0
    assert ingest.post("/v1/events", json=[event]).json()["accepted"] == 1
    assert [line["event_id"] for line in _raw_lines(tmp_path / "lake" / "raw" / "events")].count(event["event_id"]) == 1


def test_a_provenance_event_answered_507_is_not_stored_so_its_retry_is_the_only_copy(ingest, monkeypatch, tmp_path):
    token = ingest.post("/v1/tokens", json={"customer_id": "acme", "name": "ci"}).json()["token"]
    auth = {"Authorization": f"Bearer {token}"}
    action = {"event_type": "agent_action", "actor_type": "agent", "actor_id": "a1", "tool": "edit", "intent": "fix",
              "files_written": ["a.py"], "repo": "r", "commit": "abcdef1"}
    with monkeypatch.context() as patch:
        patch.setattr(events_module, "append_durably", _line_then_full_registry(events_module.append_durably))
        _assert_storage_full(ingest.post("/v1/events", json=action, headers=auth))
    assert ingest.post("/v1/events", json=action, headers=auth).status_code == 201
    assert ingest.post("/v1/events", json={**action, "commit": "0123456"}, headers=auth).status_code == 201  # a catch-up indexes no leftover
    assert len(ingest.get("/v1/provenance/by-commit/abcdef1", headers=auth).json()["events"]) == 1
    assert len(_raw_lines(tmp_path / "lake" / "raw" / "provenance")) == 2
