"""The jail's first process (nsjail): the workspace in a size-limited tmpfs, copied in and back out.

Run as `python -I -S -c <this file's text> FD SOURCE TARGET CP TAR -- COMMAND...` with the host's workspace bound
read-only at SOURCE and the tmpfs at TARGET. It copies SOURCE into TARGET (with CP), runs COMMAND, ends whatever
COMMAND left running, and writes to FD (a pipe the host reads) one line, "STATUS changed|same FULL" (the command's
exit status or -signal, or "-" when it never ran; whether TARGET changed; the mounts that ran out of space,
comma-separated, or "-"), then, when TARGET changed and nothing ran out of space, TARGET as a tar archive (with TAR).
It imports only built-in modules (a Python start is the cost it adds to every run) and nothing of trajforge: it runs
from the toolchain, outside the project.

What it does not protect against: it runs as the jail's uid, so jailed code can end it (the host then keeps the
workspace as it was) or, where the jail is in a user namespace of the host's own user, open its pipe through /proc
and write into it (the host extracts at most the disk limit, into the workspace only, through tarfile's data filter).
"""

import os
import signal
import sys


def is_full(path: str) -> bool:
    """No block or no inode left: a write there failed, or the next one will."""
    try:
        stat = os.statvfs(path)
    except OSError:
        return False
    return stat.f_bavail == 0 or (stat.f_files > 0 and stat.f_favail == 0)


def say(message: str) -> None:
    """A line on the run's stderr, which its result keeps: why it failed."""
    print(f"sandbox: {message}", file=sys.stderr, flush=True)


def spawn(argv: list[str], file_actions: list[tuple] = ()) -> int:
    """argv's exit status, or -N when signal N ended it; 127 when it cannot start (stdin is ours, /dev/null)."""
    try:
        pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=list(file_actions))
    except OSError as exc:
        print(f"{argv[0]}: {exc.strerror}", file=sys.stderr)
        return 127
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def end_the_rest() -> None:
    """SIGKILL what the command left running (only inside a PID namespace, where we are its pid 1 or 2: outside one,
    kill(-1) would reach every process of the jail's uid), then reap it, so the archive is of a tree nobody writes."""
    if os.getpid() > 2:
        return
    try:
        os.kill(-1, signal.SIGKILL)
    except OSError:
        pass
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def listing(root: str) -> dict[str, tuple[int, int, int]]:
    """(mode, size, mtime in ns) of everything under `root`, links not followed: a run that changed nothing has the
    same listing after it as before (a write changes a file's and its folder's mtime)."""
    stat = os.lstat(root)
    seen = {root: (stat.st_mode, 0, stat.st_mtime_ns)}
    for directory, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            stat = os.lstat(os.path.join(directory, name))
            seen[os.path.join(directory, name)] = (stat.st_mode, stat.st_size, stat.st_mtime_ns)
    return seen


def main(argv: list[str]) -> int:
    fd, source, target, cp, tar, command = int(argv[1]), argv[2], argv[3], argv[4], argv[5], argv[7:]
    os.set_inheritable(fd, False)  # the command never gets the pipe
    with os.fdopen(fd, "wb") as out:
        if spawn([cp, "-R", "-P", "--preserve=mode,timestamps", "--no-target-directory", source, target]) != 0:
            full = [target] if is_full(target) else []
            say(f"the workspace could not be copied into the jail{' (no space left: sandbox.disk_mb)' if full else ''}")
            out.write(f"- same {','.join(full) or '-'}\n".encode())
            return 1
        before = listing(target)
        status = spawn(command)
        end_the_rest()
        full = [path for path in (target, "/tmp") if is_full(path)]
        for path in full:
            say(f"no space left in {path} (sandbox.{'disk_mb' if path == target else 'tmp_mb'}); what the run wrote is discarded")
        changed = not full and listing(target) != before
        out.write(f"{status} {'changed' if changed else 'same'} {','.join(full) or '-'}\n".encode())
        out.flush()
        if changed:  # tar's own complaints (a socket it skips) are not the run's
            to_pipe = [(os.POSIX_SPAWN_DUP2, out.fileno(), 1), (os.POSIX_SPAWN_OPEN, 2, "/dev/null", os.O_WRONLY, 0)]
            return 0 if spawn([tar, "--format=gnu", "-C", target, "-cf", "-", "."], to_pipe) == 0 else 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
