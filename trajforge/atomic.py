"""Writing the files and folders others rely on, so that a process killed midway (SIGKILL, power loss)
leaves the previous version or the new one, never a partial one.

The one way: write a temporary sibling (same folder, so the rename never crosses filesystems), fsync
it, `os.replace` it onto the real name, fsync the folder so the rename itself survives a power loss.
A folder is made the same way: filled under a temporary name, every file in it fsync'd, then renamed
into place (`staged_dir`, `publish_dir`). Readers then need no check of their own beyond "is it there".
What a killed publisher leaves beside the folder is removed by the next publish of the same folder
(`remove_leftovers`): the previous version it renamed aside, and its temporary folder, whose flock the
writer held until it died (on a filesystem without flock: only this host's, by the pid in its name).

Appends (raw segments, trajectory and event lines, tombstones) are not this: they fsync each record
and cut a torn tail; see `trajforge.raw_segments`.
"""

from __future__ import annotations

import fcntl
import glob
import logging
import os
import re
import secrets
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from trajforge.raw_segments import fsync_dir

__all__ = ["fsync_dir", "fsync_file", "fsync_tree", "replacing", "write_atomic", "staged_dir", "publish_dir", "scratch_dir",
           "remove_leftovers", "remove_leftovers_in"]

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
    """`.<name>.<kind>-<host>-<pid>-<random>` beside `target`: a temporary ("new") or aside ("old") folder of this
    process, unique even between its threads."""
    return target.with_name(f".{target.name}.{kind}-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}")


def _same_folder(path: Path, fd: int) -> bool:
    """Is the open folder `fd` still the one at `path` (not removed or renamed away since it was opened)?"""
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _locked_staging(target: Path) -> tuple[Path, int]:
    """A new empty temporary folder beside `target` and an open descriptor of it that holds its exclusive flock: the
    mark of a live writer, which the kernel drops when the writer dies, on any host that shares the filesystem."""
    while True:
        staging = _sibling(target, "new")
        staging.mkdir()
        try:
            fd = os.open(staging, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:  # removed as a leftover between its mkdir and this open: make another
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # waits only while `remove_leftovers`, which locked it first, removes it
        except OSError:  # no flock on this filesystem: the host and pid in the name protect it instead
            return staging, fd
        if _same_folder(staging, fd):
            return staging, fd
        os.close(fd)  # removed as a leftover in the instant before this process locked it: make another


@contextmanager
def staged_dir(target: str | Path, *, replace: bool = True) -> Iterator[Path]:
    """An empty temporary folder beside `target` to fill; when the block ends normally it becomes `target`
    (`publish_dir`), when it raises it is removed and `target` stays as it was. The folder's flock is held until
    then, so no `remove_leftovers` takes it for a killed writer's."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging, lock = _locked_staging(target)
    try:
        yield staging
        publish_dir(staging, target, replace=replace)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        os.close(lock)  # after the rename: a published folder has no temporary name, so nothing removes it


@contextmanager
def scratch_dir(target: str | Path) -> Iterator[Path]:
    """A new empty folder beside `target` (`.<name>.new-<host>-<pid>-<random>`) for work that is never published (a
    jailed run's scratch space): its flock is held while the block runs and it is removed when the block ends. What a
    process killed inside the block left, `remove_leftovers(target)` removes, its flock being free then."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch, lock = _locked_staging(target)
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        os.close(lock)  # after the removal: a sweeper never finds it unlocked while this process still uses it


def publish_dir(staging: Path, target: Path, *, replace: bool = True) -> Path:
    """Make the filled folder `staging` (a sibling of `target`) durable and rename it to `target`.

    An existing `target` is renamed aside first (`.<name>.old-<host>-<pid>-<random>`) and removed after (`replace=False`
    raises instead): a kill in between leaves no `target` rather than a partial one, and the aside copy, which
    the next publish of `target` removes with the other leftovers of killed publishers (`remove_leftovers`).
    """
    staging, target = Path(staging), Path(target)
    fsync_tree(staging)
    aside = None
    if target.exists() and replace:
        aside = _sibling(target, "old")
        os.replace(target, aside)
    os.replace(staging, target)
    fsync_dir(target.parent)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
    remove_leftovers(target)
    return target


LEFTOVER = re.compile(r"\.(?P<name>.+)\.(?P<kind>new|old)-(?P<owner>.+)")  # `_sibling`'s names (and `.<name>.old-<pid>` of older code)


def remove_leftovers(target: str | Path) -> list[Path]:
    """Remove what publishers of `target` killed midway left beside it, and return it: while `target` is there, every
    older version renamed aside (`.<name>.old-...`: never the only copy then), and every temporary folder
    (`.<name>.new-...`) whose flock no writer holds. Where the filesystem has no flock, only this host's temporary
    folders of processes that are gone (a pid says nothing about another host's). Best effort: a leftover that
    cannot be removed is logged, never raised."""
    target = Path(target)
    return _remove_leftovers(target.parent, only=target.name)


def remove_leftovers_in(folder: str | Path) -> list[Path]:
    """`remove_leftovers` for every published folder in `folder` at once (a cache of many)."""
    return _remove_leftovers(Path(folder), only=None)


def _remove_leftovers(folder: Path, only: str | None) -> list[Path]:
    removed = []
    pattern = glob.escape(f".{only}.") + "*-*" if only is not None else ".*.*-*"
    for path in sorted(folder.glob(pattern)) if folder.is_dir() else []:
        match = LEFTOVER.fullmatch(path.name)
        if not match or (only is not None and match["name"] != only) or not path.is_dir() or path.is_symlink():
            continue
        if match["kind"] == "old":
            gone = (folder / match["name"]).is_dir() and _remove(path)
        else:
            gone = _remove_abandoned(path, match["owner"])
        if gone:
            log.warning("removed %s, left beside %s by a process killed while writing it", path, match["name"])
            removed.append(path)
    return removed


def _remove(path: Path) -> bool:
    try:
        shutil.rmtree(path)
    except OSError as exc:
        log.warning("could not remove %s, left by a killed publisher: %s", path, exc)
        return False
    return True


def _remove_abandoned(path: Path, owner: str) -> bool:
    """Remove the temporary folder `path` if its writer is gone: its flock is free (taken while removing, so a writer
    that made it this instant waits, then makes it again), or, with no flock here, its owner is a dead pid of this host."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return False  # published or removed meanwhile
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # its writer is alive
        except OSError:
            host, pid, _ = owner.rsplit("-", 2) if owner.count("-") >= 2 else ("", "", "")
            if not (host == socket.gethostname() and pid.isascii() and pid.isdecimal() and _gone(int(pid))):
                return False
        return _same_folder(path, fd) and _remove(path)
    finally:
        os.close(fd)


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
