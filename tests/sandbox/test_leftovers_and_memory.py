"""What a killed worker leaves on the host (its runs' scratch folders), swept by the next sandbox; and the check that
the jail's memory-backed folders (workspace, /tmp, /dev/shm) fit in `memory_mb`, made when the settings load."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from helpers import REPO
from sandbox.process import run_jailed
from sandbox.runner import Sandbox
from sandbox.scratch import scratch
from sandbox.settings import SandboxSettings, load_sandbox_settings
from trajforge.errors import ConfigError

WORKER = """
import sys
from pathlib import Path
from sandbox.process import run_jailed
from sandbox.settings import SandboxSettings

settings = SandboxSettings(jail="none", wall_time_s=120)
code = "import os, time; open('pid.tmp', 'w').write(str(os.getpid())); os.rename('pid.tmp', 'pid'); time.sleep(120)"
run_jailed(settings, [sys.executable, "-c", code], Path(sys.argv[1]))
"""


def _kill_group(pid: int) -> None:
    try:
        os.killpg(os.getpgid(pid), signal.SIGKILL)
    except ProcessLookupError:
        pass


def _unjailed(tmp_path: Path) -> SandboxSettings:
    return SandboxSettings(jail="none", workspaces_root=tmp_path / "workspaces", logs_dir=tmp_path / "logs")


def test_a_killed_workers_run_folder_is_removed_by_the_next_sandbox_and_a_live_ones_is_kept(tmp_path, monkeypatch, caplog):
    temp, workspace = tmp_path / "tmp", tmp_path / "workspace"
    temp.mkdir()
    workspace.mkdir()
    worker = subprocess.Popen([sys.executable, "-c", WORKER, str(workspace)], cwd=REPO, stderr=subprocess.DEVNULL,
                              env={**os.environ, "TMPDIR": str(temp), "PYTHONPATH": str(REPO)})
    try:
        deadline = time.monotonic() + 30
        while not (workspace / "pid").exists():
            assert worker.poll() is None and time.monotonic() < deadline, "the worker's run did not start"
            time.sleep(0.05)
        left = [path for path in temp.iterdir() if "trajforge-run" in path.name]
        assert len(left) == 1  # the run's scratch folder, while it runs
        worker.send_signal(signal.SIGKILL)  # the worker dies mid-run: it cannot remove its folder
        worker.wait(timeout=10)
    finally:
        worker.kill()
        worker.wait()
        if (workspace / "pid").exists():
            _kill_group(int((workspace / "pid").read_text()))  # the run itself, in a session of its own
    assert left[0].is_dir()

    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    with scratch("trajforge-run") as live, caplog.at_level(logging.WARNING, logger="sandbox.scratch"):
        Sandbox(_unjailed(tmp_path))  # a sandbox (a pool, an actor) starting on this host
        assert not left[0].exists()
        assert live.is_dir()  # its flock is held: a run of a live worker is never taken
    assert "removed 1 scratch folders of sandbox runs whose worker was killed" in caplog.text
    assert list(temp.iterdir()) == []  # and a run that ends removes its own


def test_a_run_that_ends_leaves_no_scratch_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    report = run_jailed(_unjailed(tmp_path), [sys.executable, "-c", "print('ran')"], tmp_path)
    assert report.stdout.text == "ran\n"
    assert list((tmp_path / "tmp").iterdir()) == []


def test_the_shipped_settings_leave_the_processes_memory():
    settings = load_sandbox_settings()
    assert settings.memory_mb - (settings.disk_mb + settings.tmp_mb + settings.shm_mb) >= 64


@pytest.mark.parametrize("assignments", [
    [("sandbox.disk_mb", "4096")],  # as large as memory_mb
    [("sandbox.memory_mb", "1024"), ("sandbox.disk_mb", "512"), ("sandbox.tmp_mb", "300")],  # 1068 of 1024
    [("sandbox.memory_mb", "1300")],  # 1280 used: 20 MB left for the processes
])
def test_memory_backed_folders_that_leave_too_little_memory_are_refused_when_the_settings_load(assignments):
    with pytest.raises(ConfigError) as refused:
        load_sandbox_settings(None, assignments)
    message = str(refused.value)
    assert "sandbox.memory_mb" in message and "sandbox.disk_mb + sandbox.tmp_mb + sandbox.shm_mb" in message
    assert "raise sandbox.memory_mb to" in message


def test_a_sandbox_refuses_copied_settings_whose_folders_do_not_fit(tmp_path):
    settings = _unjailed(tmp_path).model_copy(update={"jail": "nsjail", "memory_mb": 512, "disk_mb": 512})  # no validation
    with pytest.raises(ConfigError, match=r"sandbox\.memory_mb \(512\) must be at least 64 MB more than sandbox\.disk_mb"):
        Sandbox(settings)


def test_only_the_folders_a_jail_keeps_in_memory_count():
    assert SandboxSettings(jail="bwrap", memory_mb=1024, disk_mb=8192).disk_mb == 8192  # bwrap's workspace is the host's folder
    assert SandboxSettings(jail="none", memory_mb=256, disk_mb=8192, tmp_mb=4096).memory_mb == 256  # nothing in memory
    with pytest.raises(ValueError, match=r"sandbox\.tmp_mb \+ sandbox\.shm_mb \(512 \+ 256 = 768 MB\)"):
        SandboxSettings(jail="bwrap", memory_mb=800)
