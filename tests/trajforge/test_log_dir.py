"""`--log-dir`: JSON lines in a folder, one file a UTC day, for the command and for the Ray workers it starts
(seed 002 6.3: "local JSON logs rotated daily")."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trajforge.cli import main
from trajforge.logs import DailyJsonFile, setup_logging

REPO = Path(__file__).resolve().parents[2]
DAY = 86_400.0


@pytest.fixture
def restore_root_logging(monkeypatch):
    for name in ("TRAJFORGE_LOG_DIR", "TRAJFORGE_LOG_LEVEL", "TRAJFORGE_LOG_KEEP_DAYS"):
        monkeypatch.delenv(name, raising=False)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)


def record_at(created: float, message: str) -> logging.LogRecord:
    record = logging.LogRecord("trajforge.test", logging.INFO, __file__, 1, message, (), None)
    record.created, record.msecs = created, (created % 1) * 1000
    return record


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_each_utc_day_gets_its_own_file_and_days_past_the_kept_ones_are_deleted(tmp_path):
    midnight = 1_796_083_200.0  # 2026-12-01T00:00:00Z
    (tmp_path / "build-2026-11-01.jsonl").write_text("{}\n")  # long past the kept days
    (tmp_path / "build-notes.jsonl").write_text("kept: not a day's file\n")
    (tmp_path / "serve-2026-11-01.jsonl").write_text("{}\n")  # another command's
    handler = DailyJsonFile(tmp_path, "build", keep_days=3)
    try:
        for offset, message in [(-1.0, "before midnight"), (0.0, "at midnight"), (DAY, "next day"), (3 * DAY, "three days on")]:
            handler.handle(record_at(midnight + offset, message))
    finally:
        handler.close()

    opened_at_start = f"build-{time.strftime('%Y-%m-%d', time.gmtime())}.jsonl"  # the handler opens today's file to check the folder
    names = sorted(path.name for path in tmp_path.iterdir() if path.name != opened_at_start)
    assert names == ["build-2026-12-02.jsonl", "build-2026-12-04.jsonl", "build-notes.jsonl", "serve-2026-11-01.jsonl"]
    assert [entry["msg"] for entry in lines(tmp_path / "build-2026-12-04.jsonl")] == ["three days on"]
    entry = lines(tmp_path / "build-2026-12-02.jsonl")[0]
    assert entry["ts"] == "2026-12-02T00:00:00.000Z" and entry["pid"] == os.getpid() and entry["level"] == "info"


def test_two_processes_append_whole_lines_to_one_days_file(tmp_path):
    writer = ("import logging, sys\nfrom trajforge.logs import DailyJsonFile\n"
              "handler = DailyJsonFile(sys.argv[1], 'workers')\n"
              "for n in range(2000):\n"
              "    handler.handle(logging.LogRecord('w', logging.INFO, '', 1, sys.argv[2] + ' ' + 'x' * 300 + str(n), (), None))\n")
    writers = [subprocess.Popen([sys.executable, "-c", writer, str(tmp_path), name], cwd=REPO) for name in ("first", "second")]
    assert [process.wait(timeout=120) for process in writers] == [0, 0]

    [path] = tmp_path.iterdir()
    messages = [entry["msg"] for entry in lines(path)]
    assert len(messages) == 4000
    assert {message.split()[0] for message in messages} == {"first", "second"}


def test_setup_logging_writes_the_commands_file_and_hands_the_folder_to_its_workers(tmp_path, restore_root_logging):
    from trajforge.logs import worker_runtime_env

    setup_logging("DEBUG", log_dir=str(tmp_path / "logs"), stem="build")
    logging.getLogger("trajforge.test").debug("a debug line")

    [path] = (tmp_path / "logs").iterdir()
    assert path.name.startswith("build-") and lines(path)[0]["msg"] == "a debug line"
    runtime_env = worker_runtime_env()
    assert runtime_env["env_vars"]["TRAJFORGE_LOG_DIR"] == str(tmp_path / "logs")
    assert runtime_env["env_vars"]["TRAJFORGE_LOG_LEVEL"] == "DEBUG"
    assert runtime_env["worker_process_setup_hook"] == "trajforge.logs.setup_worker_logging"


def test_no_folder_no_runtime_env(restore_root_logging):
    from trajforge.logs import worker_runtime_env

    setup_logging("INFO")
    assert worker_runtime_env() == {}


def test_a_log_dir_that_cannot_be_made_is_one_line_and_exit_2(tmp_path, capsys, restore_root_logging):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main.main(["stats", "--log-dir", str(blocker / "logs")]) == 2
    error = capsys.readouterr().err
    assert f"cannot write logs to {blocker / 'logs'}" in error and "--log-dir" in error and "Traceback" not in error


def test_a_keep_days_that_is_not_a_count_is_refused(tmp_path, capsys, monkeypatch, restore_root_logging):
    monkeypatch.setenv("TRAJFORGE_LOG_KEEP_DAYS", "a week")
    assert main.main(["stats", "--log-dir", str(tmp_path)]) == 2
    assert "TRAJFORGE_LOG_KEEP_DAYS='a week'" in capsys.readouterr().err


WORKER_LOGS = """
import logging, os, sys
import ray
from trajforge.cluster import init_ray
from trajforge.logs import setup_logging

setup_logging("INFO", log_dir=sys.argv[1], stem="probe")
init_ray("local")

@ray.remote
def work():
    logging.getLogger("trajforge.test").info("from a worker")
    return os.getpid()

worker = ray.get(work.remote())
logging.getLogger("trajforge.test").info("from the driver")
print(worker)
"""


def test_the_ray_workers_a_command_starts_log_to_the_same_folder(tmp_path):
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("RAY_ADDRESS", "TRAJFORGE_LOG"))}
    done = subprocess.run([sys.executable, "-c", WORKER_LOGS, str(tmp_path)], cwd=REPO, env=environment,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    worker = int(done.stdout.split()[-1])

    [driver_file] = tmp_path.glob("probe-*.jsonl")
    [workers_file] = tmp_path.glob("workers-*.jsonl")
    assert [entry["msg"] for entry in lines(driver_file)] == ["from the driver"]
    assert {"msg": "from a worker", "pid": worker} in [{"msg": entry["msg"], "pid": entry["pid"]} for entry in lines(workers_file)]
