"""Writing the files and folders others rely on, so that a process killed midway (SIGKILL, power loss)
leaves the previous version or the new one, never a partial one.

The one way: write a temporary sibling (same folder, so the rename never crosses filesystems), fsync
it, `os.replace` it onto the real name, fsync the folder so the rename itself survives a power loss.
A folder is made the same way: filled under a temporary name, every file in it fsync'd, then renamed
into place (`publish_dir`). Readers then need no check of their own beyond "is it there".

Appends (raw segments, trajectory and event lines, tombstones) are not this: they fsync each record
and cut a torn tail; see `trajforge.raw_segments`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from trajforge.raw_segments import fsync_dir

__all__ = ["fsync_dir", "fsync_file", "fsync_tree", "replacing", "write_atomic", "publish_dir"]


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


def publish_dir(staging: Path, target: Path, *, replace: bool = True) -> Path:
    """Make the filled folder `staging` (a sibling of `target`) durable and rename it to `target`.

    An existing `target` is renamed aside first and removed after (`replace=False` raises instead):
    a kill in between leaves no `target` rather than a partial one, and the aside copy `.<name>.old-<pid>`.
    """
    staging, target = Path(staging), Path(target)
    fsync_tree(staging)
    aside = None
    if target.exists() and replace:
        aside = target.with_name(f".{target.name}.old-{os.getpid()}")
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(target, aside)
    os.replace(staging, target)
    fsync_dir(target.parent)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
    return target
