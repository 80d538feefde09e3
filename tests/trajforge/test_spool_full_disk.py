"""The client's spool on a full disk (injected: SQLite's own size cap, or a failing open; CI cannot mount a tmpfs):
a clear error naming the file, nothing already spooled lost or moved aside, and the spool usable once space is back."""

from __future__ import annotations

import errno
import sqlite3
import time

import pytest

from trajforge.client import IngestClient, Session, TelemetryClient, contributor_id_for
from trajforge.spool import Spool
from trajforge.storage_full import StorageFull

OFFLINE = "http://127.0.0.1:9"


def _cap(spool: Spool) -> None:
    """Let the spool's database grow no further: its next write fails as on a full disk (SQLITE_FULL)."""
    pages = spool._conn.execute("PRAGMA page_count").fetchone()[0]
    spool._conn.execute(f"PRAGMA max_page_count = {pages}")


def _uncap(spool: Spool) -> None:
    spool._conn.execute("PRAGMA max_page_count = 1073741823")


def _steps(count: int, start: int) -> list[dict]:
    return [{"step": start + i, "type": "thought", "timestamp": time.time() - 60 + i, "content": "x" * 4000, "token_count": 3} for i in range(count)]


def test_a_send_on_a_full_disk_raises_storage_full_naming_the_spool_and_keeps_what_was_spooled(tmp_path):
    path = tmp_path / "spool.db"
    with IngestClient(OFFLINE, spool_path=path, max_retries=0, chunk_timer=False) as client:
        session = Session(client, "sess_full", "c2VjcmV0", contributor_id_for("full"), "0" * 64, "codex", "m")
        for i in range(3):
            session.send_chunk(_steps(1, 1 + i))
        _cap(client.spool)
        with pytest.raises(StorageFull, match=str(path)) as refused:
            session.send_chunk(_steps(20, 10))
        assert refused.value.errno == errno.ENOSPC and "nothing already spooled was lost" in str(refused.value)
        assert client.spool.pending() == 3
        _uncap(client.spool)
        session.send_chunk(_steps(1, 40))  # the refused chunk gave its sequence back: no gap
        sequences = [int(row.body.split(b'"sequence":')[1].split(b",")[0]) for row in client.spool.head(10)]
        assert sequences == list(range(sequences[0], sequences[0] + 4))
        client.close(flush=False)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_an_emit_on_a_full_disk_raises_storage_full_and_keeps_the_spooled_events(tmp_path):
    path = tmp_path / "events.db"
    telemetry = TelemetryClient(OFFLINE, org_id="acme", spool_path=path, max_retries=0)
    try:
        telemetry.emit("model.error", {"message": "one"})
        _cap(telemetry.spool)
        with pytest.raises(StorageFull, match=str(path)):
            for _ in range(50):
                telemetry.emit("conversation.turn", {"user_message": "u" * 4000, "assistant_message": "a" * 4000})
        assert telemetry.spool.pending() >= 1
        _uncap(telemetry.spool)
        before = telemetry.spool.pending()
        telemetry.emit("model.error", {"message": "two"})
        assert telemetry.spool.pending() == before + 1
    finally:
        telemetry.spool.close()


@pytest.mark.parametrize("problem", ["disk I/O error", "database is locked"])
def test_a_spool_that_cannot_be_opened_for_want_of_space_or_a_lock_is_not_moved_aside(tmp_path, monkeypatch, problem):
    path = tmp_path / "spool.db"
    spool = Spool(path)
    spool.put("s", b'{"n":1}')
    spool.close()

    def failing(_path):
        raise sqlite3.OperationalError(problem)  # what SQLite says opening a WAL database on a full disk, or held by another

    monkeypatch.setattr("trajforge.spool._connect", failing)
    monkeypatch.setattr("trajforge.storage_full.free_bytes", lambda _path: 0 if problem == "disk I/O error" else 10**12)
    with pytest.raises(StorageFull if problem == "disk I/O error" else sqlite3.OperationalError, match=problem):
        Spool(path)
    monkeypatch.undo()
    assert not list(tmp_path.glob("spool.db.corrupt-*"))
    again = Spool(path)
    try:
        assert (again.set_aside, again.pending()) == (None, 1)
    finally:
        again.close()
