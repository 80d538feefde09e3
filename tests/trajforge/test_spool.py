"""The client's spool on disk: what a put acknowledged survives the process being SIGKILLed mid-write, and a
damaged spool file is moved aside instead of stopping the client."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from helpers import REPO

from trajforge.client import IngestClient
from trajforge.spool import Spool

WRITER = """
import sys
from trajforge.spool import Spool
spool = Spool(sys.argv[1])
n = 0
while True:
    ids = spool.put_many("s", [b'{"n":%d,"pad":"%s"}' % (n + k, b"x" * 2000) for k in range(3)])
    n += 3
    print(ids[-1], flush=True)  # acknowledged: the transaction is committed
"""


def test_every_acknowledged_envelope_survives_a_sigkill_mid_write(tmp_path):
    path = tmp_path / "spool.db"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True, cwd=REPO,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    acknowledged, deadline = 0, time.monotonic() + 60
    while acknowledged < 600 and time.monotonic() < deadline:
        acknowledged = int(writer.stdout.readline())
    writer.send_signal(signal.SIGKILL)  # mid-write: it never stops putting
    writer.wait(timeout=10)
    writer.stdout.close()
    assert acknowledged >= 600
    spool = Spool(path)
    try:
        assert spool.set_aside is None
        rows = spool.head(1_000_000)
        assert [row.id for row in rows] == list(range(1, len(rows) + 1)) and len(rows) >= acknowledged
        assert len(rows) % 3 == 0  # a put of three is all there or not at all
        assert all(row.body.startswith(b'{"n":%d,' % (row.id - 1)) and row.body.endswith(b'"}') for row in rows)
    finally:
        spool.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_damaged_spool_file_is_moved_aside_and_the_client_starts_with_an_empty_one(tmp_path, caplog):
    path = tmp_path / "spool.db"
    path.write_bytes(b"this is not a SQLite database" * 200)
    with caplog.at_level(logging.ERROR, logger="trajforge.client"):
        with IngestClient("http://127.0.0.1:9", spool_path=path, max_retries=0) as client:
            assert client.spool.pending() == 0 and client.spool.set_aside is not None
            client.spool.put("s", b'{"n":1}')
            aside = client.spool.set_aside
    assert aside.read_bytes().startswith(b"this is not a SQLite database")
    assert any("damaged" in record.getMessage() and str(aside) in record.getMessage() for record in caplog.records)
    again = Spool(path)  # the fresh spool is a good one: what went in after the damage is kept
    try:
        assert (again.set_aside, again.pending()) == (None, 1)
    finally:
        again.close()


def test_settling_a_batch_is_one_transaction_not_one_fsync_per_envelope(tmp_path):
    spool = Spool(tmp_path / "spool.db")
    try:
        for _ in range(500):
            spool.put("s", b"x" * 10)
        ids = [row.id for row in spool.head(500)]
        spool._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        spool._conn.execute("PRAGMA wal_autocheckpoint=0")  # every frame written stays counted
        spool.attempted(ids)
        spool.delivered(ids)
        _, frames, _ = spool._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert spool.pending() == 0
        assert frames < 50  # two commits of a few pages each; a transaction an envelope wrote 1,000 frames or so
    finally:
        spool.close()


def test_a_spool_path_that_is_a_directory_is_refused_and_the_directory_left_alone(tmp_path):
    folder = tmp_path / "cache"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(IsADirectoryError, match=f"{folder}.*directory.*spool.db"):
        IngestClient("http://127.0.0.1:9", spool_path=folder)
    assert (folder / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]  # nothing moved aside, no file made beside it


def test_a_new_spool_and_its_wal_are_readable_by_their_owner_only(tmp_path):
    old_umask = os.umask(0o022)  # the usual umask, which left the spool (trajectory text) readable by everyone
    try:
        spool = Spool(tmp_path / "spool.db")
        spool.put("s", b'{"secret":"text"}')
        modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
        spool.close()
    finally:
        os.umask(old_umask)
    assert "spool.db-wal" in modes
    assert modes == {name: 0o600 for name in modes}
