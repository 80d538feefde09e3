"""Writing the files and folders others rely on, so that a process killed midway (SIGKILL, power loss)
leaves the previous version or the new one, never a partial one.

The one way: write a temporary sibling (same folder, so the rename never crosses filesystems), fsync
it, `os.replace` it onto the real name, fsync the folder so the rename itself survives a power loss.
A folder is made the same way: filled under a temporary name, every file in it fsync'd, then renamed
into place (`staged_dir`, `publish_dir`). Readers then need no check of their own beyond "is it there".
What a killed publisher leaves beside the folder is removed by the next publish of the same folder
(`remove_leftovers`): the previous version it renamed aside from any host, its temporary folder on
the same host only (a pid says nothing about another host's processes).

Appends (raw segments, trajectory and event lines, tombstones) are not this: they fsync each record
and cut a torn tail; see `trajforge.raw_segments`.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from trajforge.raw_segments import fsync_dir

__all__ = ["fsync_dir", "fsync_file", "fsync_tree", "replacing", "write_atomic", "staged_dir", "publish_dir", "remove_leftovers"]

log = logging.getLogger(__name__)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    """fsync every file under `folder`, then every folder (deepest first), `folder` included."""
    folders = []
    for root, _, names in os.walk(folder):
        folders.append(Path(root))
        for name in names:
            path = Path(root) / name
            if path.is_file() and not path.is_symlink():
                fsync_file(path)
    for path in reversed(folders):
        fsync_dir(path)


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` to write to (any writer: pyarrow, json, ...). When the block ends
    normally it is fsync'd and replaces `path`; when it raises, it is removed and `path` stays as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary(path)
    try:
        yield temporary
        fsync_file(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_atomic(path: str | Path, data: bytes | str) -> Path:
    """Replace `path` with `data` (str is written as UTF-8): afterwards it holds the old bytes or all the new ones."""
    path = Path(path)
    with replacing(path) as temporary:
        temporary.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def _sibling(target: Path, kind: str) -> Path:
    """`.<name>.<kind>-<host>-<pid>` beside `target`: this process's temporary ("new") or aside ("old") folder."""
    return target.with_name(f".{target.name}.{kind}-{socket.gethostname()}-{os.getpid()}")


@contextmanager
def staged_dir(target: str | Path, *, replace: bool = True) -> Iterator[Path]:
    """An empty temporary folder beside `target` to fill; when the block ends normally it becomes `target`
    (`publish_dir`), when it raises it is removed and `target` stays as it was."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = _sibling(target, "new")
    shutil.rmtree(staging, ignore_errors=True)  # this process's own, from an earlier call that failed
    staging.mkdir()
    try:
        yield staging
        publish_dir(staging, target, replace=replace)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def publish_dir(staging: Path, target: Path, *, replace: bool = True) -> Path:
    """Make the filled folder `staging` (a sibling of `target`) durable and rename it to `target`.

    An existing `target` is renamed aside first (`.<name>.old-<host>-<pid>`) and removed after (`replace=False`
    raises instead): a kill in between leaves no `target` rather than a partial one, and the aside copy, which
    the next publish of `target` removes with the other leftovers of killed publishers (`remove_leftovers`).
    """
    staging, target = Path(staging), Path(target)
    fsync_tree(staging)
    aside = None
    if target.exists() and replace:
        aside = _sibling(target, "old")
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(target, aside)
    os.replace(staging, target)
    fsync_dir(target.parent)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
    remove_leftovers(target)
    return target


def remove_leftovers(target: Path) -> list[Path]:
    """Remove what publishers of `target` killed midway left beside it, and return it: while `target` is there, every
    older version renamed aside (`.<name>.old-...`: never the only copy then), and the temporary folders
    (`.<name>.new-<host>-<pid>`) of this host's processes that are gone (another host's, or a live process's, may
    still be filling). Best effort: a leftover that cannot be removed is logged, never raised."""
    removed = []
    host = socket.gethostname()
    for path in target.parent.glob(glob.escape(f".{target.name}.") + "*-*"):
        kind, _, owner = path.name[len(target.name) + 2:].partition("-")
        writer_host, _, pid = owner.rpartition("-")
        dead_writer = writer_host == host and pid.isascii() and pid.isdecimal() and _gone(int(pid))
        if not ((kind == "old" and target.is_dir()) or (kind == "new" and dead_writer)) or not path.is_dir() or path.is_symlink():
            continue
        try:
            shutil.rmtree(path)
        except OSError as exc:
            log.warning("could not remove %s, left beside %s by a killed publisher: %s", path, target.name, exc)
            continue
        log.warning("removed %s, left beside %s by a process killed while publishing it", path, target.name)
        removed.append(path)
    return removed


def _gone(pid: int) -> bool:
    """True when no process `pid` runs on this host."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # OverflowError: no pid that large
        return True
    except PermissionError:
        return False  # someone else's, alive
    return False
