"""One `trajforge train` at a time in a run folder.

A second start into `<output_dir>/<run_name>/` while a run trains there would cut its metrics, remove Ray Train's
record of its checkpoints, and train beside it into the same checkpoint folders. The driver holds an exclusive
flock on `<run>/.trajforge_run.lock` from before it reads anything of the run until it ends; a second start is
refused in one line naming the holder. The kernel drops the lock with the process, so a killed driver leaves
nothing to clean up. Where the filesystem has no flock, nothing is locked (a warning says so).
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from trajforge.errors import TrajforgeError

log = logging.getLogger(__name__)
LOCK_FILE = ".trajforge_run.lock"


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    with open(path, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise TrajforgeError(f"run {run_dir} is in use: another `trajforge train` ({holder}) trains it now; wait for it to end or "
                                 "stop it (Ctrl-C), then the same command resumes it, or start this one under another learner.run_name") from None
        except OSError as exc:
            log.warning("cannot lock %s (%s): nothing stops a second start from training into the same run", path, exc)
        else:
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n")
            handle.flush()
        yield
