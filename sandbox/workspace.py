"""Workspaces: create them from files or a directory, read them back safely, diff them, remove them.

Jailed code can leave symlinks in a workspace; everything here reads without following links
(`os.walk(followlinks=False)`, `O_NOFOLLOW`), so a link to `/etc/shadow` is reported as a link and
never opened.
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
import stat
import uuid
from collections.abc import Mapping
from pathlib import Path

from sandbox.models import InvalidAction, check_relative_path
from sandbox.settings import SandboxSettings

TASK_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
SEPARATOR = "--"
MAX_FILES = 20_000


def check_task_id(task_id: str) -> str:
    if not isinstance(task_id, str) or not TASK_ID.match(task_id) or SEPARATOR in task_id:
        raise InvalidAction(f"task id {task_id!r} must be 1-128 characters of letters, digits, '.', '_' or '-' (no '--'), starting with a letter or digit")
    return task_id


def jail_owner(settings: SandboxSettings) -> tuple[int, int] | None:
    """Who a workspace's files belong to: the jail's uid and gid when we are root (the jail runs as them), else None."""
    return (settings.uid, settings.gid) if os.geteuid() == 0 and settings.jail != "none" else None


def task_of(workspace: Path) -> str:
    """The task id a workspace was prepared for (its directory is `<task_id>--<random>`)."""
    return Path(workspace).name.rsplit(SEPARATOR, 1)[0]


def create(root: Path, task_id: str, files: Mapping[str, str | bytes] | str | Path, owner: tuple[int, int] | None) -> Path:
    """A new workspace under `root` holding `files` ({relative path: content}) or a copy of a directory."""
    check_task_id(task_id)
    root.mkdir(parents=True, exist_ok=True)
    workspace = root.resolve() / f"{task_id}{SEPARATOR}{uuid.uuid4().hex[:12]}"
    workspace.mkdir(mode=0o755)
    try:
        if isinstance(files, (str, Path)):
            _copy_directory(Path(files), workspace)
        else:
            _write_files(files, workspace)
        if owner is not None:
            chown_tree(workspace, *owner)
    except BaseException:
        shutil.rmtree(workspace, ignore_errors=True)
        raise
    return workspace


def _write_files(files: Mapping[str, str | bytes], workspace: Path) -> None:
    if not isinstance(files, Mapping):
        raise InvalidAction(f"files must map relative paths to contents, got {type(files).__name__}")
    if len(files) > MAX_FILES:
        raise InvalidAction(f"{len(files)} files: a workspace takes at most {MAX_FILES}")
    seen: dict[str, str] = {}
    for name, content in files.items():
        try:
            relative = check_relative_path(name)
        except ValueError as exc:
            raise InvalidAction(str(exc)) from None
        _check_case(relative, seen)
        if not isinstance(content, (str, bytes)):
            raise InvalidAction(f"content of {name!r} must be str or bytes, got {type(content).__name__}")
        target = workspace / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            data = content.encode("utf-8") if isinstance(content, str) else content
        except UnicodeEncodeError as exc:
            raise InvalidAction(f"content of {name!r} holds a lone UTF-16 surrogate ({ascii(exc.object[exc.start:exc.end])} at "
                                f"character {exc.start}), which is not text: give whole characters, or the file's bytes") from None
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)


def _copy_directory(source: Path, workspace: Path) -> None:
    """Copy regular files and directories; a symlink is kept only when it stays inside the snapshot. A name that is
    not portable (see `check_relative_path`) is refused, as in a {path: content} snapshot."""
    if not source.is_dir():
        what = "is a file, not a directory" if source.exists() else "does not exist"
        raise InvalidAction(f"snapshot directory {source} {what}: give the folder to copy")
    source = source.resolve()
    seen: dict[str, str] = {}
    for directory, dirnames, filenames in os.walk(source, followlinks=False):
        relative_dir = Path(directory).relative_to(source)
        for name in [*dirnames, *filenames]:
            path, relative = Path(directory) / name, relative_dir / name
            try:  # the same portable names as a {path: content} snapshot (and an action's paths) must have
                check_relative_path(relative.as_posix())
            except ValueError as exc:
                raise InvalidAction(f"snapshot entry {relative}: {exc}") from None
            _check_case(relative.as_posix(), seen)
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                target = os.readlink(path)
                resolved = (path.parent / target).resolve()
                if not (resolved == source or source in resolved.parents):
                    raise InvalidAction(f"snapshot symlink {relative} -> {target} points outside the snapshot; remove it or replace it with the file")
                (workspace / relative).symlink_to(os.path.relpath(resolved, (source / relative).parent))
            elif stat.S_ISDIR(mode):
                (workspace / relative).mkdir(mode=0o755)
            elif stat.S_ISREG(mode):  # the contents and whether it is executable (a test's `#!/bin/sh` script)
                shutil.copyfile(path, workspace / relative, follow_symlinks=False)
                os.chmod(workspace / relative, 0o755 if mode & 0o111 else 0o644)
            else:
                raise InvalidAction(f"snapshot entry {relative} is not a regular file, directory or symlink")
        dirnames[:] = [d for d in dirnames if not (Path(directory) / d).is_symlink()]


def _check_case(relative: str, seen: dict[str, str]) -> None:
    """InvalidAction when `relative`, or a folder on its way, differs from a path in `seen` (casefolded -> path) only in
    case: macOS and Windows hold one file for both, so the task would not be portable (seed 002 section 4.3)."""
    parts = relative.split("/")
    for end in range(1, len(parts) + 1):
        path = "/".join(parts[:end])
        other = seen.setdefault(path.casefold(), path)
        if other != path:
            raise InvalidAction(f"paths {other!r} and {path!r} differ only in case, which macOS and Windows cannot hold "
                                "side by side: rename one")


def chown_tree(workspace: Path, uid: int, gid: int) -> None:
    os.chown(workspace, uid, gid)
    for directory, dirnames, filenames in os.walk(workspace, followlinks=False):
        for name in [*dirnames, *filenames]:
            os.chown(Path(directory) / name, uid, gid, follow_symlinks=False)


def read_tree(workspace: Path, max_bytes: int) -> dict[str, bytes | str]:
    """{relative path: bytes} for regular files, {path: "symlink -> target"} for links; never follows links. A name or
    link target that is not UTF-8 (jailed code may make one) is shown with its bytes escaped (`\\xff`)."""
    tree: dict[str, bytes | str] = {}
    for directory, dirnames, filenames in os.walk(workspace, followlinks=False):
        for name in [*dirnames, *filenames]:
            path = Path(directory) / name
            relative = _shown(path.relative_to(workspace).as_posix())
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                tree[relative] = f"symlink -> {_shown(os.readlink(path))}"
            elif stat.S_ISREG(mode):
                tree[relative] = read_file(path, max_bytes)
        dirnames[:] = [d for d in dirnames if not (Path(directory) / d).is_symlink()]
    return tree


def _shown(name: str) -> str:
    """A file system name as text: the bytes Python decoded to lone surrogates (not UTF-8) as `\\xNN` escapes."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def link_on_the_way(workspace: Path, relative: str) -> str | None:
    """The first folder of `relative` (a checked relative path) that is a symlink in `workspace`, or None."""
    parts = relative.split("/")
    for end in range(1, len(parts)):
        if (workspace / "/".join(parts[:end])).is_symlink():
            return "/".join(parts[:end])
    return None


def read_file(path: Path, max_bytes: int) -> bytes:
    """Read a regular file without following a link at its last component, at most `max_bytes`."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            return b""
        return handle.read(max_bytes)


def unified_diff(before: Mapping[str, bytes | str], after: Mapping[str, bytes | str]) -> tuple[str, list[str]]:
    """A `git apply`-able unified diff (a/ b/ prefixes) and the sorted paths that changed."""
    changed = sorted(path for path in before.keys() | after.keys() if before.get(path) != after.get(path))
    chunks = []
    for path in changed:
        old, new = before.get(path), after.get(path)
        if isinstance(old, str) or isinstance(new, str):
            chunks.append(f"--- a/{path}\n+++ b/{path}\n@@ link @@\n-{old or ''}\n+{new or ''}\n")
            continue
        try:
            old_lines = (old or b"").decode("utf-8").splitlines(keepends=True)
            new_lines = (new or b"").decode("utf-8").splitlines(keepends=True)
        except UnicodeDecodeError:
            chunks.append(f"Binary files a/{path} and b/{path} differ\n")
            continue
        lines = difflib.unified_diff(old_lines, new_lines, f"a/{path}" if old is not None else "/dev/null",
                                     f"b/{path}" if new is not None else "/dev/null")
        chunks.append("".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines))
    return "".join(chunks), changed


def cap_lines(text: str, cap: int) -> tuple[str, int, bool]:
    """(the start of `text` in at most `cap` UTF-8 bytes, cut after its last whole line; its size in bytes; truncated)."""
    data = text.encode("utf-8")
    if len(data) <= cap:
        return text, len(data), False
    kept = data[:cap]
    end = kept.rfind(b"\n")
    return (kept[: end + 1] if end >= 0 else kept).decode("utf-8", "ignore"), len(data), True


def remove(workspace: Path, root: Path) -> None:
    """Delete a workspace (only a direct child of `root`; links inside are removed, never followed)."""
    workspace, root = Path(workspace).absolute(), root.resolve()
    if workspace.parent.resolve() != root or workspace.is_symlink():
        raise InvalidAction(f"{workspace} is not a workspace under {root}")
    shutil.rmtree(workspace, ignore_errors=True)
