"""The disk limit of a run (`sandbox.disk_mb`): in nsjail, the workspace a run sees is a tmpfs of that size.

Why a tmpfs and not a measure of the workspace after the run: a program writing at disk speed fills a disk long before
a 30 s run ends, and RLIMIT_FSIZE bounds one file, not how many. A tmpfs of `disk_mb` (and at most WORKSPACE_INODES files)
refuses the write that would pass it (ENOSPC), whatever writes it. So the host's workspace is bound read-only into the
jail, copied into the tmpfs by the jail's first process (sandbox/inside.py), and what the run leaves there comes back
as a tar stream on a pipe, extracted beside the workspace and swapped in. The jail's /tmp and /dev/shm are tmpfs too
(`tmp_mb`, `shm_mb`); all three are memory, charged to the run's cgroup, so nothing a jailed run writes reaches the
host's disk except its workspace, at most `disk_mb` of it.

A run that fills its workspace or /tmp fails with the `disk` limit and its writes are discarded: the workspace stays
as it was before the run. So does a run the jail kills (time, output): nothing comes back from a killed jail.
With bwrap or no jail there is no copy: the workspace (and, without a jail, the run's own TMPDIR) is measured every
POLL_S and the run killed when over, which bounds a fill only by what a program writes in POLL_S, and what it wrote
stays until `cleanup`. (bwrap started by root runs as sandbox.uid, which cannot reach a Python under /root to copy
the workspace; bwrap's /tmp and /dev/shm are sized tmpfs all the same.)
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import sys
import tarfile
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from sandbox.jail import JAIL_PATH, WORKSPACE_INODES, JailUnavailable, Mount
from sandbox.settings import SandboxSettings
from sandbox.workspace import chown_tree

log = logging.getLogger(__name__)
WORKSPACE, WORKSPACE_IN = "/workspace", "/.workspace-in"
HEADER_BYTES = 4096
POLL_S = 0.2
INSIDE_SOURCE = Path(__file__).with_name("inside.py").read_text(encoding="utf-8")


class _Overflow(Exception):
    """The archive coming back holds more than the tmpfs could (only a forged one can)."""


@dataclass
class CopyBack:
    status: int | None = None
    """The command's exit status, or -N for signal N; None when the jail's first process did not say (killed)."""
    full: list[str] = field(default_factory=list)
    """The jail's mounts that ran out of space (/workspace, /tmp): the run hit the `disk` limit."""


class _CappedReader:
    def __init__(self, raw, cap: int) -> None:
        self.raw, self.left = raw, cap

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size if size >= 0 else self.left + 1)
        self.left -= len(data)
        if self.left < 0:
            raise _Overflow()
        return data


class WorkspaceCopy:
    """One run's copy of `workspace` into the jail's tmpfs and back: `mounts` and `wrap` for the command line,
    `pass_fds` for Popen, `started` once it runs, `finish` when it has ended."""

    def __init__(self, settings: SandboxSettings, workspace: Path, owner: tuple[int, int] | None) -> None:
        self.limit_bytes, self.owner = settings.disk_mb << 20, owner
        self.workspace = Path(workspace)
        self.read_fd, self.write_fd = os.pipe()
        tag = uuid.uuid4().hex[:8]
        self.staging = self.workspace.parent / f".incoming-{self.workspace.name}-{tag}"
        self.replaced = self.workspace.parent / f".replaced-{self.workspace.name}-{tag}"
        self.back = CopyBack()
        self._complete = False
        self._files = self._bytes = 0
        self._links: dict[str, str] = {}
        self._thread = threading.Thread(target=self._receive, daemon=True)

    @property
    def pass_fds(self) -> tuple[int, ...]:
        return (self.write_fd,)

    def mounts(self) -> list[Mount]:
        return [Mount(self.workspace, WORKSPACE_IN)]

    def wrap(self, command: list[str]) -> list[str]:
        tools = [shutil.which(name, path=JAIL_PATH) for name in ("cp", "tar")]
        if None in tools:
            raise JailUnavailable(f"the jail copies the workspace with cp and tar, and finds no {'tar' if tools[0] else 'cp'} in {JAIL_PATH}")
        return [sys.executable, "-I", "-S", "-c", INSIDE_SOURCE, str(self.write_fd), WORKSPACE_IN, WORKSPACE, *tools, "--", *command]

    def started(self) -> None:
        os.close(self.write_fd)
        self._thread.start()

    def abandon(self) -> None:
        """The jail never started: close both ends."""
        for fd in (self.read_fd, self.write_fd):
            try:
                os.close(fd)
            except OSError:
                pass

    def _receive(self) -> None:
        try:
            with os.fdopen(self.read_fd, "rb") as pipe:
                header = pipe.readline(HEADER_BYTES).decode("ascii", "replace").split()
                if len(header) != 3:
                    return  # killed before it said anything: the workspace stays as it was
                status, change, full = header
                self.back = CopyBack(status=int(status) if status.lstrip("-").isdigit() else None,
                                     full=[path for path in full.split(",") if path != "-"])
                if self.back.status is None or self.back.full or change != "changed":
                    return
                self.staging.mkdir(mode=0o755)
                reader = _CappedReader(pipe, 2 * self.limit_bytes + (64 << 20))
                with tarfile.open(fileobj=reader, mode="r|") as archive:
                    archive.extractall(self.staging, filter=self._filter)
                for name, target in self._links.items():
                    _make_link(self.staging, name, target)
                self._complete = True
        except _Overflow:
            self.back.full.append(WORKSPACE)
        except (OSError, ValueError, tarfile.TarError) as exc:  # a torn or forged archive: the workspace stays as it was
            log.warning("the workspace %s did not come back from its jail (%s); it is left as it was", self.workspace, exc)

    def _filter(self, member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
        """tarfile's `data` filter, except that symlinks are made only once everything else is extracted (`_links`), as
        jailed code made them, pointing out or not (the host reads links without following them): while the archive is
        extracted there is no link on disk for a member's path to pass through. (The filter's own check of such paths,
        `os.path.realpath`, gives up on a chain of links longer than PATH_MAX before Python 3.11.13, CVE-2025-4517, and a
        forged archive wrote through one outside the workspace.) Special files are dropped; more than the tmpfs could
        hold is an overflow."""
        self._files += 1
        self._bytes += member.size if member.isreg() else 0
        if self._files > WORKSPACE_INODES or self._bytes > self.limit_bytes:
            raise _Overflow()
        try:
            if member.issym() or (member.islnk() and member.linkname in self._links):  # a hard link of a symlink is one too
                kept = tarfile.tar_filter(member, dest)  # its name inside dest (the 'data' filter would refuse a link out)
                self._links[kept.name] = self._links.get(member.linkname, kept.linkname) if member.islnk() else kept.linkname
                return None
            return tarfile.data_filter(member, dest)
        except tarfile.FilterError:
            return None

    def finish(self) -> CopyBack:
        """Wait for the archive (the pipe ends with the jail), swap it in for the workspace if it came whole."""
        self._thread.join()
        try:
            if self._complete and not self.back.full:
                os.chmod(self.staging, 0o755)
                if self.owner is not None:
                    chown_tree(self.staging, *self.owner)
                os.rename(self.workspace, self.replaced)
                try:
                    os.rename(self.staging, self.workspace)
                except OSError:
                    os.rename(self.replaced, self.workspace)
                    raise
        finally:
            for leftover in (self.staging, self.replaced):
                shutil.rmtree(leftover, ignore_errors=True)
        return self.back


def _make_link(root: Path, name: str, target: str) -> None:
    """The symlink `name` -> `target` under `root`, unless a folder on its way is a link (an archive cannot place a
    link through another) or something of that name is there already (only a forged archive has both); the folder
    holding it keeps its mode and time."""
    *folders, base = Path(os.path.normpath(name)).parts
    folder = root
    for part in folders:
        folder = folder / part
        if not os.path.lexists(folder) or not stat.S_ISDIR(os.lstat(folder).st_mode):
            return
    before = os.lstat(folder)
    try:
        os.chmod(folder, stat.S_IMODE(before.st_mode) | stat.S_IRWXU)
        os.symlink(target, folder / base)
    except OSError:
        pass
    finally:
        os.chmod(folder, stat.S_IMODE(before.st_mode))
        os.utime(folder, ns=(before.st_atime_ns, before.st_mtime_ns))


def usage_bytes(paths: list[Path], stop_above: int) -> int:
    """Bytes the files under `paths` occupy (links not followed), counting stopped once past `stop_above`."""
    total, pending = 0, [str(path) for path in paths]
    while pending and total <= stop_above:
        try:
            with os.scandir(pending.pop()) as entries:
                for entry in entries:
                    stat = entry.stat(follow_symlinks=False)
                    total += stat.st_blocks * 512
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(entry.path)
        except OSError:
            continue
    return total


class DiskWatch:
    """Without a jail: kill the run when `paths` pass `limit_bytes`, measured every POLL_S and once at the end."""

    def __init__(self, paths: list[Path], limit_bytes: int, kill) -> None:
        self.paths, self.limit_bytes, self.kill = paths, limit_bytes, kill
        self.exceeded = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _over(self) -> bool:
        return usage_bytes(self.paths, self.limit_bytes) > self.limit_bytes

    def _watch(self) -> None:
        while not self._stop.wait(POLL_S):
            if self._over():
                self.exceeded = True
                self.kill()
                return

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> bool:
        self._stop.set()
        self._thread.join()
        self.exceeded = self.exceeded or self._over()
        return self.exceeded
