"""A full disk told apart from the other failures of a write, so that every writer can say so in one clear line.

A full disk (ENOSPC), an exhausted quota (EDQUOT) and SQLite's "database or disk is full" are an operator's to fix
(free space, then retry): nothing of what was accepted before is lost, and the same request or command works again.
`storage_full` finds one anywhere in an exception's chain, also where only its text survived (pyarrow's errors, a
Ray worker's exception re-raised on the driver). Some writers fail on a full disk without saying so (torch's
checkpoint writer: "unexpected pos"); `free_bytes` lets them name the space left beside their own message.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from trajforge.errors import TrajforgeError

FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
SQLITE_FULL = 13
_TEXTS = ("no space left on device", "disk quota exceeded", "database or disk is full")


class StorageFull(TrajforgeError, OSError):
    """A write failed because the disk (or quota) holding `path` is full; the message says what was kept and what to do."""

    def __init__(self, message: str, path: str | os.PathLike | None = None):
        super().__init__(errno.ENOSPC, message)
        self.filename = None if path is None else str(path)

    def __str__(self) -> str:
        return self.strerror


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    """`exc` and every exception it was raised from or while handling (and a Ray error's `cause`), each once."""
    pending, seen = [exc], set()
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending += [current.__cause__, current.__context__, getattr(current, "cause", None)]


def _is_full(exc: BaseException) -> bool:
    if isinstance(exc, StorageFull) or (isinstance(exc, OSError) and exc.errno in FULL_ERRNOS):
        return True
    if isinstance(exc, sqlite3.Error) and (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF == SQLITE_FULL:
        return True
    return any(text in str(exc).lower() for text in _TEXTS)


def storage_full(exc: BaseException | None) -> bool:
    """Whether `exc`, or an exception it was raised from (or while handling), is a full disk or quota."""
    return any(_is_full(current) for current in _chain(exc))


def out_of_space(exc: BaseException | None, path: str | os.PathLike, below: int = 1 << 20) -> bool:
    """`storage_full(exc)`, or fewer than `below` bytes left where `path` is: for writers that fail on a full disk with
    a message of their own (SQLite's "disk I/O error" opening a WAL, torch's "unexpected pos")."""
    free = free_bytes(path)
    return storage_full(exc) or (free is not None and free < below)


def free_bytes(path: str | os.PathLike) -> int | None:
    """Bytes free to this user on the filesystem holding `path` (its nearest existing parent); None when unknown."""
    target = Path(path).absolute()
    while not target.exists() and target != target.parent:
        target = target.parent
    try:
        stat = os.statvfs(target)
    except OSError:
        return None
    return stat.f_bavail * stat.f_frsize


def space_left(path: str | os.PathLike) -> str:
    """`<n> MB free on the device holding <path>`, for a message (`an unknown amount` when it cannot be read)."""
    free = free_bytes(path)
    amount = "an unknown amount" if free is None else f"{free / 1e6:.1f} MB"
    return f"{amount} free on the device holding {path}"


def full_file(exc: BaseException | None) -> str | None:
    """The file a full disk refused, when an exception in the chain names it."""
    for current in _chain(exc):
        if isinstance(current, OSError) and current.filename and (current.errno in FULL_ERRNOS or isinstance(current, StorageFull)):
            return str(current.filename)
    return None


def full_disk_message(exc: BaseException, lake: str | os.PathLike | None = None) -> str | None:
    """The one line a command ends with when `exc` is a full disk (None otherwise): where (the file it names, else the
    command's lake), the first line of the error, and what to do. A full disk is the operator's to fix, not a traceback."""
    if not storage_full(exc):
        return None
    named = full_file(exc)
    where = f" writing {named}" if named else f" holding {lake}" if lake else ""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    first = f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    return f"no space left on the device{where} ({first}); free space and run the command again"
