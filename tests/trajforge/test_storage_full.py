"""A full disk named as such, in one line, by every writer's command (injected: CI cannot mount a small tmpfs)."""

from __future__ import annotations

import errno
import os
import re
import sqlite3
from pathlib import Path

import pytest

from trajforge.cli import main
from trajforge.errors import TrajforgeError
from trajforge.storage_full import StorageFull, full_file, storage_full

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class WorkerError(Exception):
    """Stands for a Ray worker's exception re-raised on the driver: the OSError survives only as text or `.cause`."""


def _raised_from(cause: BaseException) -> Exception:
    try:
        try:
            raise cause
        except BaseException as exc:
            raise RuntimeError("UDF failed to process a data block") from exc
    except RuntimeError as outer:
        return outer


@pytest.mark.parametrize(("exc", "full"), [
    (ENOSPC, True),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), True),
    (sqlite3.OperationalError("database or disk is full"), True),
    (_raised_from(OSError(errno.ENOSPC, "No space left on device", "/lake/x.seg")), True),
    (WorkerError("ray::MapBatches() ... OSError: [Errno 28] Error writing bytes to file. Detail: [errno 28] No space left on device"), True),
    (OSError(errno.EACCES, "Permission denied"), False),
    (sqlite3.OperationalError("database is locked"), False),
    (_raised_from(ValueError("bad row")), False),
])
def test_a_full_disk_is_found_anywhere_in_the_chain_and_nothing_else_is_taken_for_one(exc, full):
    assert storage_full(exc) is full


def test_the_file_a_full_disk_refused_is_named_when_the_chain_has_it():
    assert full_file(_raised_from(OSError(errno.ENOSPC, "No space left on device", "/lake/x.seg"))) == "/lake/x.seg"
    assert full_file(ENOSPC) is None


def test_a_build_on_a_full_disk_says_so_in_one_line_and_that_latest_is_unchanged(monkeypatch, tmp_path, capsys):
    import pipelines.build

    def full_build(settings, *, full, org, progress):
        raise WorkerError("ray::MapBatches(process_batch)() ...\nOSError: [Errno 28] Error writing bytes to file. Detail: [errno 28] "
                          "No space left on device")

    monkeypatch.setattr(pipelines.build, "run_build", full_build)
    (tmp_path / "raw").mkdir()
    (tmp_path / "curated").mkdir()
    (tmp_path / "curated" / "LATEST").write_text("20260101T000000Z-0001\n")
    assert main.main(["build", "--lake", str(tmp_path), "--no-embed"]) == 2
    # the shared test cluster's CPUs may be held, which the build warns about in a log line of its own first
    [err] = [line for line in capsys.readouterr().err.strip().splitlines() if not re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d", line)]
    assert err.startswith("trajforge build: no space left for the build")
    assert str(tmp_path) in err and "curated/LATEST still names 20260101T000000Z-0001" in err


def test_any_command_that_meets_a_full_disk_ends_with_one_line_naming_the_lake(monkeypatch, tmp_path, capsys):
    import trajforge.tombstones

    def full_append(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(trajforge.tombstones.os, "fsync", full_append)
    (tmp_path / "raw").mkdir()
    assert main.main(["forget", "f" * 32, "--lake", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"trajforge forget: no space left on the device holding {tmp_path} (OSError: [Errno 28] No space left on device); "
                   "free space and run the command again")


def test_a_python_m_entry_point_that_meets_a_full_disk_ends_with_the_same_line(tmp_path, capsys):
    """`ray job submit -- python -m pipelines.X` on a full disk: the line `trajforge X` gives, not a traceback."""
    import argparse

    from trajforge.cli.common import module_main

    def full_job(args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "part-0.parquet"))

    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--lake")

    assert module_main("pipelines.example", "doc", add_arguments, lambda args: (), full_job, ["--lake", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"pipelines.example: no space left on the device writing {tmp_path / 'part-0.parquet'} "
        f"(OSError: [Errno 28] No space left on device: '{tmp_path / 'part-0.parquet'}'); free space and run the command again")


def test_publishing_to_a_full_destination_says_it_is_full_and_that_a_rerun_goes_on():
    from trajforge.lake_fs import storage_error

    error = storage_error(OSError("[Errno 28] Error writing bytes to file. Detail: [errno 28] No space left on device"),
                          "file:///pub/b/sft/part-00000.parquet", "uploading it")
    assert isinstance(error, StorageFull) and error.errno == errno.ENOSPC
    assert str(error).startswith("file:///pub/b/sft/part-00000.parquet: uploading it failed") and "full" in str(error)
    assert "run the same command again" in str(error)


def test_a_training_run_that_fills_its_disk_says_so_and_where_it_resumes(tmp_path, monkeypatch):
    from learner import checkpoint

    run = tmp_path / "run"
    done = run / "checkpoints" / "step-000004"
    done.mkdir(parents=True)
    (done / checkpoint.STATE_FILE).write_text("{}")
    (run / "checkpoints" / "step-000006").mkdir()  # the save the full disk interrupted: no state file
    torch_says = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1839168 vs 1839056")
    roomy = checkpoint.failure("training failed: RuntimeError: unexpected pos", torch_says, run)
    assert type(roomy) is TrajforgeError and str(roomy) == "training failed: RuntimeError: unexpected pos"
    monkeypatch.setattr("trajforge.storage_full.free_bytes", lambda _path: 0)
    full = checkpoint.failure("training failed: RuntimeError: unexpected pos", torch_says, run)
    assert isinstance(full, StorageFull) and str(full).startswith("training failed: RuntimeError: unexpected pos (0.0 MB free")
    assert str(full).endswith(f"free space, then the same command resumes the run from its last complete checkpoint, {done}")


def test_a_synthetic_records_job_that_fills_its_disk_says_how_to_resume_it(monkeypatch, tmp_path, capsys):
    import pipelines.synth_records.runner
    from helpers import REPO

    def full_job(settings, job_id, progress):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pipelines.synth_records.runner, "run_job", full_job)
    schema = REPO / "examples" / "synth_records" / "support_ticket.schema.json"
    assert main.main(["synth-records", "run", "--schema", str(schema), "--description", "tickets", "--records", "2", "--lake", str(tmp_path),
                      "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    job = re.match(r"trajforge synth-records: no space left for job (\S+) \(", err)
    assert job and err.endswith(f"every record written so far is kept; free space, then: trajforge synth-records resume {job[1]}")


def test_a_pull_into_a_full_local_disk_names_the_local_file_not_the_storage(tmp_path, monkeypatch):
    from trajforge import lake_fs

    (tmp_path / "remote").mkdir()
    (tmp_path / "remote" / "a.seg").write_bytes(b"x" * 1000)
    remote = lake_fs.open_uri(f"file://{tmp_path / 'remote'}")
    real_open = open

    class FullFile:
        def __init__(self, path, mode):
            self.handle = real_open(path, mode)

        def write(self, block):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def close(self):
            self.handle.close()

    monkeypatch.setattr(lake_fs, "open", FullFile, raising=False)
    local = tmp_path / "lake" / ".a.seg.pull-1"
    local.parent.mkdir()
    with pytest.raises(StorageFull) as full:
        lake_fs.hash_remote(remote, "a.seg", local)
    assert str(full.value).startswith(f"{local}: writing it failed") and "the disk here is full" in str(full.value)
