"""Replacing files and folders others rely on: a kill midway leaves the old version or the new one, and what is
renamed into place was fsync'd first."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from trajforge import atomic


def record_syncs(monkeypatch) -> list[tuple[str, str]]:
    """Every fsync (the path behind the descriptor) and every rename, in the order they happen."""
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda src, dst: (events.append(("replace", f"{src} -> {dst}")), real_replace(src, dst))[1])
    return events


def test_write_atomic_syncs_the_new_bytes_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    path = tmp_path / "LATEST"
    path.write_text("old\n")
    events = record_syncs(monkeypatch)
    atomic.write_atomic(path, "new\n")
    assert path.read_text() == "new\n" and [p.name for p in tmp_path.iterdir()] == ["LATEST"]
    kinds = [kind for kind, _ in events]
    assert kinds == ["fsync", "replace", "fsync"]
    assert events[0][1].endswith(".tmp") and events[2][1] == str(tmp_path)


def test_a_writer_that_fails_midway_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "tasks.jsonl"
    path.write_text("line 1\nline 2\n")
    with pytest.raises(RuntimeError, match="killed"):
        with atomic.replacing(path) as temporary:
            temporary.write_text("half a li")
            raise RuntimeError("killed")
    assert path.read_text() == "line 1\nline 2\n" and [p.name for p in tmp_path.iterdir()] == ["tasks.jsonl"]


def test_a_process_killed_midway_leaves_the_old_file(tmp_path):
    path = tmp_path / "report.md"
    path.write_text("the previous report\n")
    script = textwrap.dedent(f"""
        import os
        from trajforge import atomic
        with atomic.replacing({str(path)!r}) as temporary:
            temporary.write_text("the new repo")
            os._exit(9)
    """)
    assert subprocess.run([sys.executable, "-c", script], cwd=Path(atomic.__file__).parents[1]).returncode == 9
    assert path.read_text() == "the previous report\n"


def test_publish_dir_syncs_every_file_before_the_rename_and_replaces_an_old_folder(tmp_path, monkeypatch):
    target, staging = tmp_path / "hf", tmp_path / "hf.partial"
    target.mkdir()
    (target / "old.bin").write_bytes(b"old")
    (staging / "sub").mkdir(parents=True)
    (staging / "config.json").write_text("{}")
    (staging / "sub" / "weights.bin").write_bytes(b"w" * 100)
    events = record_syncs(monkeypatch)
    atomic.publish_dir(staging, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"] and (target / "sub" / "weights.bin").read_bytes() == b"w" * 100
    rename = events.index(("replace", f"{staging} -> {target}"))
    synced = {path for kind, path in events[:rename] if kind == "fsync"}
    assert {str(staging / "config.json"), str(staging / "sub" / "weights.bin"), str(staging / "sub"), str(staging)} <= synced
    assert ("fsync", str(tmp_path)) in events[rename:]


def test_publish_dir_without_replace_refuses_a_folder_that_is_there(tmp_path):
    (tmp_path / "target").mkdir()
    (tmp_path / "target" / "rows.json").write_text("{}")
    (tmp_path / "staging").mkdir()
    (tmp_path / "staging" / "rows.json").write_text('{"train": 1}')
    with pytest.raises(OSError):
        atomic.publish_dir(tmp_path / "staging", tmp_path / "target", replace=False)
    assert (tmp_path / "target" / "rows.json").read_text() == "{}"


def test_staged_dir_publishes_what_the_block_filled_and_removes_it_when_the_block_raises(tmp_path):
    target = tmp_path / "model"
    with atomic.staged_dir(target) as staging:
        (staging / "config.json").write_text('{"v": 1}')
        assert not target.exists()
    assert (target / "config.json").read_text() == '{"v": 1}'
    with pytest.raises(RuntimeError), atomic.staged_dir(target) as staging:
        (staging / "config.json").write_text('{"v": 2}')
        raise RuntimeError("killed while saving")
    assert (target / "config.json").read_text() == '{"v": 1}' and [p.name for p in tmp_path.iterdir()] == ["model"]


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_publish_removes_what_killed_publishers_of_its_folder_left_and_nothing_in_use(tmp_path):
    host, dead = socket.gethostname(), _dead_pid()
    target = tmp_path / "run[1]"  # glob characters in the name
    abandoned = [tmp_path / f".run[1].new-{host}-{dead}", tmp_path / f".run[1].new-other-host-{os.getppid()}"]  # nobody holds their flock
    asides = [tmp_path / f".run[1].old-{host}-{dead}", tmp_path / f".run[1].old-other-host-{os.getppid()}", tmp_path / f".run[1].old-{dead}"]
    other = tmp_path / f".other.new-{host}-{dead}"  # another folder's
    for folder in [*abandoned, *asides, other]:
        folder.mkdir()
    with atomic.staged_dir(target) as live:  # a live writer holds its folder's flock
        (live / "weights").write_text("half")
        assert sorted(atomic.remove_leftovers(target)) == sorted(abandoned)
        assert all(aside.is_dir() for aside in asides)  # no target yet: an aside may be the only copy of the old version
        assert (live / "weights").read_text() == "half"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, other.name])  # published; the asides went
    assert atomic.remove_leftovers_in(tmp_path) == [other]  # a whole folder's at once


def test_a_staging_folder_removed_as_a_leftover_before_its_writer_opened_it_is_made_again(tmp_path, monkeypatch):
    """Another writer's `remove_leftovers` can see a fresh staging folder between its mkdir and the flock that marks it
    live, and remove it: the writer makes another instead of failing with FileNotFoundError."""
    real_open, taken = os.open, []

    def open_after_a_removal(path, flags, *args, **kwargs):
        if ".cache.new-" in str(path) and not taken:  # the writer's first open of its staging folder
            taken.append(path)
            assert [p.name for p in atomic.remove_leftovers(tmp_path / "cache")] == [Path(path).name]
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(atomic.os, "open", open_after_a_removal)
    with atomic.staged_dir(tmp_path / "cache") as staging:
        (staging / "rows").write_text("all")
    assert taken and (tmp_path / "cache" / "rows").read_text() == "all"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]


def test_without_flock_only_this_hosts_temporary_folders_of_dead_processes_are_removed(tmp_path, monkeypatch):
    def no_flock(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(atomic.fcntl, "flock", no_flock)
    host, dead, alive = socket.gethostname(), _dead_pid(), os.getppid()
    target = tmp_path / "run"
    dead_temporaries = [tmp_path / f".run.new-{host}-{dead}-0a1b2c3d",
                        tmp_path / f".run.new-{host}-99999999999999999999-0a1b2c3d"]  # no such pid: gone (and no OverflowError)
    kept = [tmp_path / f".run.new-{host}-{alive}-0a1b2c3d",  # a live process is still filling it
            tmp_path / f".run.new-other-host-{dead}-0a1b2c3d",  # another host's: its pid says nothing here
            tmp_path / f".run.new-{dead}"]  # no host in its name: nothing proves its writer dead
    for folder in [*dead_temporaries, *kept]:
        folder.mkdir()
    assert sorted(atomic.remove_leftovers(target)) == sorted(dead_temporaries)
    with atomic.staged_dir(target) as staging:  # still publishes, unlocked
        (staging / "done").write_text("yes")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["run"] + [folder.name for folder in kept])
