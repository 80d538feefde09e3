"""The state store under pressure: processes creating and writing one database together, damaged files, and the
dump CLI's answers for them and for a reader that closes the pipe."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from actors.state import State, StateStore
from actors.state.store import StateDatabaseError

REPO = Path(__file__).resolve().parents[2]


def _state_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "actors.state", *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, **(env or {})})


def test_a_new_database_another_process_is_creating_is_waited_for_not_refused(tmp_path):
    """Actors starting together on a new lake: switching a new file to WAL needs it alone, and SQLite said "database is
    locked" at once (not after the busy timeout) to every actor but the first."""
    path = tmp_path / "states.db"
    creator = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    creator.execute("BEGIN IMMEDIATE")
    creator.execute("CREATE TABLE IF NOT EXISTS states (task_id TEXT PRIMARY KEY, state TEXT NOT NULL, version INTEGER NOT NULL, updated_at REAL NOT NULL)")
    done = threading.Timer(0.4, lambda: creator.execute("COMMIT"))
    done.start()
    started = time.monotonic()
    try:
        store = StateStore(path)
    finally:
        done.join()
        creator.close()
    assert time.monotonic() - started >= 0.3
    assert store.save("t", State(goals=["g"])) == 1


WRITER = """
import sys
from actors.state import StateStore, merge
store = StateStore(sys.argv[1])
for k in range(40):
    store.update("shared", lambda s: merge(s, {"history": [f"{sys.argv[2]}-{k}"], "decisions": [f"{sys.argv[2]} decided {k % 4}"]}))
"""


def test_two_processes_updating_one_task_lose_no_write(tmp_path):
    path = tmp_path / "lake" / "state" / "states.db"
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), name], cwd=REPO, stderr=subprocess.PIPE, text=True)
               for name in ("a", "b")]
    errors = [writer.communicate(timeout=120)[1] for writer in writers]
    assert [writer.returncode for writer in writers] == [0, 0], errors
    store = StateStore(path)
    assert store.version("shared") == 80
    assert sorted(store.load("shared").decisions) == sorted(f"{name} decided {k}" for name in "ab" for k in range(4))


@pytest.fixture
def damaged_db(tmp_path) -> Path:
    """A state database whose first page (the schema) is overwritten, as a disk or a careless copy would."""
    path = tmp_path / "states.db"
    store = StateStore(path)
    for index in range(50):
        store.save(f"task-{index}", State(goals=["g" * 200] * 8))
    store._connection().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store._connection().close()
    data = bytearray(path.read_bytes())
    data[100:400] = bytes(300)
    path.write_bytes(bytes(data))
    return path


def test_a_damaged_or_foreign_file_is_named_in_the_stores_error(damaged_db, tmp_path):
    with pytest.raises(StateDatabaseError, match=f"{damaged_db} is a damaged SQLite database") as damaged:
        StateStore(damaged_db).load("task-1")
    assert damaged.value.damaged and isinstance(damaged.value, sqlite3.DatabaseError)
    junk = tmp_path / "notes.db"
    junk.write_text("not sqlite at all, just a long enough line of text to be read as a header\n")
    with pytest.raises(StateDatabaseError, match=f"{junk} is not a state database \\(file is not a database\\)"):
        StateStore(junk)


def test_dump_cli_says_a_damaged_database_is_damaged_not_the_wrong_file(damaged_db):
    for verb in (["dump", "task-1"], ["list"]):
        run = _state_cli("--db", str(damaged_db), *verb)
        assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
        assert run.stderr.startswith(f"{damaged_db} is a damaged SQLite database (database disk image is malformed)")
        assert "pass --db" not in run.stderr


def test_dump_cli_ends_quietly_when_its_reader_closes_the_pipe(tmp_path):
    db = tmp_path / "states.db"
    StateStore(db).save("task-1", State(goals=["g" * 200] * 16))
    process = subprocess.Popen([sys.executable, "-m", "actors.state", "dump", "task-1", "--db", str(db)], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # `python -m actors.state dump ... | head -1`, the reader gone before the first line
    errors = process.stderr.read().decode()
    process.stderr.close()
    assert process.wait(timeout=60) == 141 and errors == ""


def test_dump_cli_lists_nothing_for_an_empty_database_and_names_its_verbs(tmp_path):
    db = tmp_path / "states.db"
    StateStore(db)
    listing = _state_cli("list", "--db", str(db))
    assert listing.returncode == 0 and listing.stdout == ""
    bare = _state_cli("--db", str(db))
    assert bare.returncode == 2 and "required: {dump,list}" in bare.stderr
    assert " ".join(_state_cli("dump", "--help").stdout.split()).count("task_id the task's id") == 1


def test_dump_cli_with_bad_actors_settings_says_so_in_one_message(tmp_path):
    run = _state_cli("dump", "task-1", env={"TRAJFORGE__ACTORS__COUNT": "many"})
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert "actors.count (set by TRAJFORGE__ACTORS__COUNT)" in run.stderr and "pass --db" in run.stderr


def test_dump_cli_answers_a_missing_database_no_arguments_and_help_clearly(tmp_path):
    missing = tmp_path / "lake" / "state" / "states.db"
    for verb in (["dump", "task-1"], ["list"]):
        run = _state_cli(*verb, "--db", str(missing))
        assert (run.returncode, run.stdout, run.stderr) == (2, "", f"no state database at {missing} (pass --db)\n")
    by_settings = _state_cli("dump", "task-1", env={"TRAJFORGE__ACTORS__LAKE": str(tmp_path / "lake")})
    assert by_settings.returncode == 2 and by_settings.stderr == f"no state database at {missing} (pass --db)\n"
    assert not (tmp_path / "lake").exists()  # looking made nothing
    bare = _state_cli()
    assert bare.returncode == 2 and bare.stdout == "" and "usage: python -m actors.state" in bare.stderr
    assert "the following arguments are required: {dump,list}" in bare.stderr
    no_task = _state_cli("dump", "--db", str(missing))
    assert no_task.returncode == 2 and "the following arguments are required: task_id" in no_task.stderr
    helped = _state_cli("--help")
    assert helped.returncode == 0 and helped.stderr == ""
    assert "python -m actors.state dump <task_id>" in helped.stdout and "Exit status: 0 printed; 1 no state for that task" in helped.stdout
