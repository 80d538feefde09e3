"""Progress bars where stderr is no terminal: a `ray job submit` job's log (Ray writes the entrypoint's output to a file,
and `ray job logs` and the dashboard show each redraw as a line), a file or a pipe. tqdm redraws every 0.1 s, so a
rollout of thousands of tasks wrote thousands of lines there; after `setup_logging` (what every command calls first)
it redraws there once every `PROGRESS_INTERVAL_S`, and as before at a terminal."""

from __future__ import annotations

import fcntl
import os
import struct
import subprocess
import sys
import termios

from trajforge.logs import PROGRESS_INTERVAL_S

BAR = """
import time
from trajforge.logs import setup_logging
setup_logging()
from tqdm import tqdm
for _ in tqdm(range(150), desc="rollout tasks", unit="task"):
    time.sleep(0.02)
"""


def _redraws(stderr) -> bytes:
    env = {name: value for name, value in os.environ.items() if not name.startswith("TQDM_")}
    done = subprocess.run([sys.executable, "-c", BAR], stderr=stderr, stdout=subprocess.DEVNULL, env=env, timeout=60, check=True)
    return done.stderr


def test_a_bar_redraws_once_an_interval_where_stderr_is_a_file_or_a_pipe():
    assert PROGRESS_INTERVAL_S >= 10
    drawn = _redraws(subprocess.PIPE)
    assert drawn.count(b"rollout tasks") == 2, drawn  # when it starts and when it ends (3 s apart), none between
    assert b"150/150" in drawn


def test_a_terminal_still_sees_the_bar_move():
    main, terminal = os.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a new one is 0 columns wide: no bar fits
    try:
        _redraws(terminal)
    finally:
        os.close(terminal)
    drawn = b""
    try:
        while chunk := _read(main):
            drawn += chunk
    finally:
        os.close(main)
    assert drawn.count(b"rollout tasks") > 5


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except OSError:  # a terminal whose other end is closed, once all is read
        return b""


RAY_DATA_INTERVAL = """
from trajforge.logs import setup_logging
setup_logging()
from ray.data._internal.progress.logging_progress import LoggingExecutionProgressManager
print(LoggingExecutionProgressManager.LOG_REPORT_INTERVAL_SEC)
"""


def test_ray_datas_progress_blocks_are_logged_once_an_interval_where_stdout_is_no_terminal():
    """Ray Data logged a 6-line block per dataset every 10 s there: most of a job's log."""
    env = {name: value for name, value in os.environ.items() if name != "RAY_DATA_NON_TTY_PROGRESS_LOG_INTERVAL"}
    done = subprocess.run([sys.executable, "-c", RAY_DATA_INTERVAL], capture_output=True, text=True, env=env, timeout=120, check=True)
    assert done.stdout.split() == [str(PROGRESS_INTERVAL_S)]
