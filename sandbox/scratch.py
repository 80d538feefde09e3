"""The host-side scratch folders of jailed runs, and what killed workers left of them.

Each run (`sandbox.process.run_jailed`: nsjail's log, the unjailed mode's TMPDIR) and each ast-grep action
(`Sandbox._apply`: the action and output folders mounted into the jail) works in a folder of the temporary directory
(`$TMPDIR`, else /tmp) named `.trajforge-run.new-<host>-<pid>-<random>` or `.trajforge-action.new-...`, whose flock
the worker holds while it runs (`trajforge.atomic.scratch_dir`) and which it removes when the run ends. A worker
killed midway (SIGKILL, OOM) cannot remove it; the kernel drops its flock, and the next `Sandbox` made on the host
(so every pool and Ray actor that starts) removes every such folder nobody holds (`sweep_leftovers`), logging how
many. A live run's folder is never taken: its flock is held. Folders of the old naming (`trajforge-run-XXXX`, made
before the flock) carry no owner and are left alone.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from trajforge.atomic import remove_leftovers, scratch_dir

log = logging.getLogger(__name__)
KINDS = ("trajforge-run", "trajforge-action")


def _target(kind: str) -> Path:
    return Path(tempfile.gettempdir()) / kind


@contextmanager
def scratch(kind: str, mode: int = 0o700) -> Iterator[Path]:
    """A fresh folder of this kind (one of KINDS) for one run, with `mode`, flock held, removed at the end."""
    with scratch_dir(_target(kind)) as folder:
        os.chmod(folder, mode)
        yield folder


def sweep_leftovers() -> int:
    """Remove the scratch folders of runs whose worker died (their flock is free); how many were removed."""
    removed = [path for kind in KINDS for path in remove_leftovers(_target(kind))]
    if removed:
        log.warning("removed %d scratch folders of sandbox runs whose worker was killed, from %s", len(removed), tempfile.gettempdir())
    return len(removed)
