"""Crash recovery of the envelope store, built directly (no Ray): torn tails, unindexed frames, corruption."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from helpers import steps

from serve_apps.ingest.settings import IngestSettings
from serve_apps.ingest.store import EnvelopeStore
from serve_apps.ingest.verify import Candidate, verify
from trajforge import crypto
from trajforge.contracts.requests import SessionOpenRequest
from trajforge.jsjson import canonical_without, js_stringify, loads_strict
from trajforge.raw_segments import MAGIC

CONTRIBUTOR = "c" * 32


def _settings(lake: Path) -> IngestSettings:
    return IngestSettings(lake=lake, key_file=lake / "test.key")


def _open(store: EnvelopeStore, session_id: str) -> str:
    client_public, client_private = crypto.generate_keypair()
    verdict = store.open_session(SessionOpenRequest(
        session_id=session_id, public_key=client_public, provider="codex", model="gpt-5.5",
        machine_fingerprint="m" * 64, app_version_hash="a" * 64, groove_version="0.27.113",
    ))
    return crypto.derive_shared_secret(client_private, verdict.body["server_public_key"])


BASE = float(int(time.time()) - 600)


def _candidate(store: EnvelopeStore, secret: str, session_id: str, sequence: int, base: float = BASE) -> Candidate:
    unsigned = {"session_id": session_id, "chunk_sequence": sequence, "contributor_id": CONTRIBUTOR, "metadata": {}, "trajectory_log": steps(2, start=2 * sequence + 1, base=base)}
    signature = crypto.sign_envelope(secret, canonical_without(unsigned, "attestation"), sequence)
    body = js_stringify({**unsigned, "attestation": {"session_hmac": signature, "sequence": sequence, "app_version_hash": "a" * 64}})
    checked = verify(loads_strict(body), body, "client", store.secret_of)
    assert isinstance(checked, Candidate), checked
    return checked


def _kill_writer_after_fsync(lake: Path, session_id: str, secret: str) -> None:
    """In a child process: append and fsync one envelope, then die (SIGKILL) before indexing it."""
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path[:0] = {sys.path!r}
        from pathlib import Path
        from serve_apps.ingest.settings import IngestSettings
        from serve_apps.ingest.store import EnvelopeStore
        import test_ingest_recovery as t
        from trajforge import raw_segments
        store = EnvelopeStore(IngestSettings(lake=Path({str(lake)!r}), key_file=Path({str(lake / "test.key")!r})))
        candidate = t._candidate(store, {secret!r}, {session_id!r}, 1, base={BASE!r})
        def sync_then_die(writer):
            os.fsync(writer._fd)
            os.kill(os.getpid(), signal.SIGKILL)   # durable on disk, never indexed, never acknowledged
        raw_segments.SegmentWriter.sync = sync_then_die
        store.commit([candidate])
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parent, capture_output=True, text=True)
    assert result.returncode == -9, result.stderr


def test_frames_fsynced_but_never_indexed_are_recovered_once(tmp_path):
    store = EnvelopeStore(_settings(tmp_path))
    secret = _open(store, "sess_a")
    assert store.commit([_candidate(store, secret, "sess_a", 0)])[0].status == 200
    store.close()
    _kill_writer_after_fsync(tmp_path, "sess_a", secret)

    restarted = EnvelopeStore(_settings(tmp_path))
    again = restarted.commit([_candidate(restarted, secret, "sess_a", 1)])[0]
    assert again.status == 200 and again.body["duplicate"] is True
    conn = sqlite3.connect(tmp_path / "registry" / "ingest.db")
    assert conn.execute("SELECT last_sequence, envelope_count FROM sessions").fetchone() == (1, 2)
    assert conn.execute("SELECT COUNT(*) FROM segments WHERE status = 'open'").fetchone()[0] == 1  # only the new writer's


def test_a_torn_tail_is_cut_logged_and_quarantined(tmp_path, caplog):
    store = EnvelopeStore(_settings(tmp_path))
    secret = _open(store, "sess_b")
    store.commit([_candidate(store, secret, "sess_b", 0)])
    segment = store._segment.writer.path
    store._segment.writer.close()  # as if the process died: lock released, segment still 'open'
    store._segment = None
    good_size = segment.stat().st_size
    with open(segment, "ab") as handle:
        handle.write(MAGIC + b"\x00\x00\x00\x30\x00\x00\x01\x00" + b"half a frame")
    restarted = EnvelopeStore(_settings(tmp_path))
    assert segment.stat().st_size == good_size
    assert list((tmp_path / "quarantine").iterdir())
    assert "torn tail" in caplog.text
    assert restarted.commit([_candidate(restarted, secret, "sess_b", 1)])[0].status == 200


def test_damage_followed_by_valid_frames_is_not_cut(tmp_path, caplog):
    store = EnvelopeStore(_settings(tmp_path))
    secret = _open(store, "sess_c")
    store.commit([_candidate(store, secret, "sess_c", 0)])
    store.commit([_candidate(store, secret, "sess_c", 1)])
    segment = store._segment.writer.path
    store._segment.writer.close()
    store._segment = None
    conn = sqlite3.connect(tmp_path / "registry" / "ingest.db")
    conn.execute("UPDATE segments SET committed_offset = 0")
    conn.commit()
    data = bytearray(segment.read_bytes())
    data[30] ^= 0xFF  # corrupt the first frame, keep the second
    segment.write_bytes(bytes(data))
    size = segment.stat().st_size
    EnvelopeStore(_settings(tmp_path))
    assert segment.stat().st_size == size
    assert "not a torn tail" in caplog.text
    assert conn.execute("SELECT status FROM segments").fetchone()[0] == "corrupt"


def test_a_session_closed_but_not_credited_is_credited_at_start(tmp_path):
    store = EnvelopeStore(_settings(tmp_path))
    secret = _open(store, "sess_d")
    store.commit([_candidate(store, secret, "sess_d", 0)])
    unsigned = {"session_id": "sess_d", "type": "SESSION_CLOSE", "contributor_id": CONTRIBUTOR, "outcome": {"status": "SUCCESS"}}
    signature = crypto.sign_envelope(secret, canonical_without(unsigned, "attestation"), 1)
    body = js_stringify({**unsigned, "attestation": {"session_hmac": signature, "sequence": 1, "app_version_hash": "a" * 64}})
    candidate = verify(loads_strict(body), body, "client", store.secret_of)
    store.finalize_close = lambda session_id: None  # the process "dies" before crediting
    store.commit([candidate])
    store.close()
    conn = sqlite3.connect(tmp_path / "registry" / "ingest.db")
    assert conn.execute("SELECT COUNT(*) FROM credits").fetchone()[0] == 0
    EnvelopeStore(_settings(tmp_path))
    assert conn.execute("SELECT points FROM credits WHERE session_id = 'sess_d'").fetchone()[0] == 2 * 5 + 0


def test_secrets_are_sealed_and_key_file_private(tmp_path):
    store = EnvelopeStore(_settings(tmp_path))
    secret = _open(store, "sess_e")
    raw = (tmp_path / "registry" / "ingest.db").read_bytes()
    assert secret.encode() not in raw
    assert ((tmp_path / "test.key").stat().st_mode & 0o777) == 0o600
    for name in ("ingest.db", "ingest.db-wal", "ingest.db-shm"):
        assert ((tmp_path / "registry" / name).stat().st_mode & 0o777) == 0o600, name
    row = sqlite3.connect(tmp_path / "registry" / "ingest.db").execute("SELECT shared_secret FROM sessions").fetchone()
    assert row[0] != secret and store.box.open(row[0]) == secret
