"""How every command ends when its reader goes away: `trajforge stats | head -2` closes the pipe early, and the
command stops quietly with the status a shell reports for SIGPIPE, not a BrokenPipeError traceback."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

SIGPIPE_STATUS = 128 + 13
"""What a shell reports for a program killed by SIGPIPE (`cat big | head` under `set -o pipefail`): the reader stopped
reading, so the output was cut; not 0 (not everything was written), not 2 (nothing was refused)."""


def quiet_when_reader_leaves(run: Callable[[], int]) -> int:
    """`run()`'s status, or SIGPIPE_STATUS without a traceback when stdout's reader closed the pipe; a broken pipe of
    the command's own (a child process that died) is still raised."""
    try:
        try:
            return run()
        finally:
            sys.stdout.flush()  # so a closed pipe shows here rather than as "Exception ignored" at exit
    except BrokenPipeError:
        if not _stdout_closed():
            raise  # another pipe of the command's own broke: a fault to show, not a reader gone
        _silence_stdout()
        return SIGPIPE_STATUS


def _stdout_closed() -> bool:
    """Whether stdout is a pipe whose reader has gone (Linux' poll says POLLERR for it)."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError):  # a stdout with no file descriptor (a test's capture) is no pipe
        return False


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's own flush at exit does not meet the closed pipe again
    (the standard recipe of Python's `signal` documentation, "Note on SIGPIPE")."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
