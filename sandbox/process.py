"""Run one command in the configured jail and report what happened: output, time, memory, limits hit.

The exit code alone cannot say why a run died (a time limit, a CPU limit and an OOM kill are all
SIGKILL, exit 137), so the classification reads nsjail's log, the run's cgroup counters and this
module's own output and time watchdogs. In nsjail the command runs under the jail's first process
(sandbox/inside.py, see sandbox/disk.py), which reports its exit status and whether the workspace
or /tmp ran out of space.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

from sandbox.cgroups import RunCgroup
from sandbox.disk import DiskWatch, WorkspaceCopy
from sandbox.jail import JailUnavailable, Mount, bwrap_argv, jail_env, nsjail_argv, toolchain_mounts
from sandbox.models import RunReport, StreamOutput
from sandbox.scratch import scratch
from sandbox.settings import SandboxSettings
from sandbox.workspace import jail_owner

log = logging.getLogger(__name__)
_warned_no_jail = False
NSJAIL_SETUP_FAILED = ("Launching child process failed", "Couldn't launch the child process", "Couldn't prepare sandboxing policy")
NSJAIL_TIME_LIMIT = "run time >= time limit"
# How nsjail's log ends a run: its exit status is 128+N both for a signal N and for a program that exits 128+N itself.
NSJAIL_ENDED = re.compile(r"\) (?:exited with status: (\d+)|terminated with signal: \w+ \((\d+)\))")
CHUNK = 65536
TAIL_BYTES = 64 << 10
"""Of a stream cut at the cap, its last bytes are kept too (not in the result) for the test runner's counts."""


class _Capture:
    """Drains stdout and stderr; keeps the first `cap` bytes of each; trips when both exceed `kill_at`."""

    def __init__(self, cap: int, kill_at: int, on_exceeded) -> None:
        self.cap, self.kill_at, self.on_exceeded = cap, kill_at, on_exceeded
        self.kept = {"stdout": bytearray(), "stderr": bytearray()}
        self.total = {"stdout": 0, "stderr": 0}
        self.tail = {"stdout": bytearray(), "stderr": bytearray()}
        self.exceeded = False
        self._lock = threading.Lock()

    def drain(self, name: str, pipe) -> None:
        with pipe:
            while chunk := pipe.read1(CHUNK) if hasattr(pipe, "read1") else pipe.read(CHUNK):
                with self._lock:
                    kept = self.kept[name]
                    if len(kept) < self.cap:
                        kept += chunk[: self.cap - len(kept)]
                    self.total[name] += len(chunk)
                    tail = self.tail[name]
                    tail += chunk[-TAIL_BYTES:]
                    del tail[:-TAIL_BYTES]
                    trip = not self.exceeded and sum(self.total.values()) > self.kill_at
                    if trip:
                        self.exceeded = True
                if trip:
                    self.on_exceeded()

    def stream(self, name: str) -> StreamOutput:
        return StreamOutput(text=self.kept[name].decode("utf-8", errors="replace"), bytes=self.total[name],
                            truncated=self.total[name] > len(self.kept[name]))


def _warn_no_jail() -> None:
    global _warned_no_jail
    if not _warned_no_jail:
        _warned_no_jail = True
        log.warning("sandbox.jail is 'none': actions and tests run WITHOUT isolation (results say \"jail\": \"none\")")


def run_jailed(settings: SandboxSettings, command: list[str], workspace: Path, *, cwd: str = "/workspace",
               extra_mounts: list[Mount] = (), env: dict[str, str] | None = None) -> RunReport:
    """Run `command` with `workspace` mounted read-write at /workspace (`extra_mounts` beside it)."""
    env = jail_env(env)
    if not command:
        raise ValueError("empty command")
    if not os.path.isabs(command[0]):
        found = shutil.which(command[0], path=env["PATH"])
        if found is None:
            message = f"command not found in the jail's PATH ({env['PATH']}): {command[0]}\n"
            return RunReport(exit_code=127, stderr=StreamOutput(text=message, bytes=len(message)), jail=settings.jail)
        command = [found, *command[1:]]
    with scratch("trajforge-run") as run_dir:  # flock'd: a sweep removes it only once this worker is gone
        group = RunCgroup.create(settings.memory_mb << 20, settings.max_processes, settings.cpus)
        try:
            return _run(settings, command, workspace, cwd, list(extra_mounts), env, run_dir, group)
        finally:
            if group is not None:
                group.remove()


def _limits_prefix(settings: SandboxSettings, group: RunCgroup | None) -> list[str]:
    """rlimits for bwrap and the no-jail mode (nsjail sets its own)."""
    prefix = ["prlimit", f"--fsize={settings.max_file_size_mb << 20}", f"--nofile={settings.max_open_files}", "--core=0"]
    if group is None:  # no cgroup: the address space and per-uid process limits are the fallback
        prefix += [f"--as={settings.memory_mb << 20}", f"--nproc={settings.max_processes}"]
    return [*prefix, "--"]


def _argv(settings, command, workspace, cwd, mounts, env, run_dir, group, copy) -> tuple[list[str], Path, dict[str, str]]:
    """The full command line, the host directory to start it in, and its environment."""
    if copy is not None:  # nsjail: the workspace is a tmpfs the jail's first process copies it into
        all_mounts = [*toolchain_mounts(settings), *copy.mounts(), *mounts]
        command = copy.wrap(command)
    else:
        all_mounts = [*toolchain_mounts(settings), Mount(workspace, "/workspace", writable=True), *mounts]
    if settings.jail == "nsjail":
        argv = nsjail_argv(settings, command, all_mounts, cwd, env, run_dir / "nsjail.log", copy.pass_fds)
        if group is None:
            index = argv.index("--rlimit_as")
            argv[index + 1] = str(settings.memory_mb)
        return argv, run_dir, {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    if settings.jail == "bwrap":
        argv = bwrap_argv(settings, _limits_prefix(settings, group) + command, all_mounts, cwd, env)
        return argv, run_dir, {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    _warn_no_jail()
    env = {**env, "TMPDIR": str(run_dir / "tmp"), "HOME": str(run_dir / "tmp")}  # not the host's /tmp: measured, then removed
    host_cwd = workspace / cwd.removeprefix("/workspace").lstrip("/") if cwd.startswith("/workspace") else workspace
    translated = [_outside(arg, all_mounts) for arg in command]
    return _limits_prefix(settings, group) + translated, host_cwd, {**env, "PATH": f"{env['PATH']}:{os.environ.get('PATH', '')}"}


def _outside(arg: str, mounts: list[Mount]) -> str:
    """Without a jail, paths inside the jail's mounts are their host paths."""
    for mount in mounts:
        if mount.inside != str(mount.host) and (arg == mount.inside or arg.startswith(mount.inside + "/")):
            return str(mount.host) + arg[len(mount.inside) :]
    return arg


def _run(settings, command, workspace, cwd, mounts, env, run_dir, group) -> RunReport:
    copy = WorkspaceCopy(settings, workspace, jail_owner(settings)) if settings.jail == "nsjail" else None
    try:
        argv, host_cwd, host_env = _argv(settings, command, workspace, cwd, mounts, env, run_dir, group, copy)
        if group is not None:
            argv = ["/bin/sh", "-c", f'{group.join_command()} && exec "$@"', "sh", *argv]
        (run_dir / "tmp").mkdir(mode=0o700)
        started = time.perf_counter()
        try:
            process = subprocess.Popen(argv, cwd=host_cwd, env=host_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, start_new_session=True, pass_fds=copy.pass_fds if copy else ())
        except OSError as exc:
            raise JailUnavailable(f"cannot start {argv[0]}: {exc}") from None
    except BaseException:
        if copy is not None:
            copy.abandon()
        raise
    if copy is not None:
        copy.started()
    timed_out = threading.Event()

    def kill() -> None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if group is not None:
            group.kill_all()

    capture = _Capture(settings.output_cap_bytes, settings.output_kill_bytes, kill)
    readers = [threading.Thread(target=capture.drain, args=(name, pipe), daemon=True)
               for name, pipe in (("stdout", process.stdout), ("stderr", process.stderr))]
    for reader in readers:
        reader.start()
    # nsjail enforces the wall time itself in whole seconds; the watchdog is the limit for the other jails, for a
    # fractional wall_time_s, and a backstop for nsjail.
    grace = 5.0 if settings.jail == "nsjail" and float(settings.wall_time_s).is_integer() else 0.0
    watchdog = threading.Timer(settings.wall_time_s + grace, lambda: (timed_out.set(), kill()))
    watchdog.start()
    disk_watch = DiskWatch([workspace, run_dir / "tmp"], settings.disk_mb << 20, kill) if copy is None else None
    if disk_watch is not None:
        disk_watch.start()
    _, status, usage = os.wait4(process.pid, 0)
    watchdog.cancel()
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if group is not None:
        group.kill_all()  # strays of the no-jail mode: the tree ends with the command
    for reader in readers:
        reader.join(timeout=5)
    back = copy.finish() if copy is not None else None
    disk_full = bool(back.full) if back is not None else disk_watch.stop()
    status_inside = back.status if back is not None else None
    return _report(settings, process.returncode, wall, usage, capture, timed_out.is_set(), group, run_dir, status_inside, disk_full)


def _report(settings, returncode, wall, usage, capture, timed_out, group, run_dir, status_inside, disk_full) -> RunReport:
    nsjail_log = ""
    if settings.jail == "nsjail":
        try:
            nsjail_log = (run_dir / "nsjail.log").read_text(errors="replace")
        except OSError:
            pass
        if returncode == 255 and any(marker in nsjail_log for marker in NSJAIL_SETUP_FAILED):
            raise JailUnavailable("nsjail could not start the jail:\n" + "\n".join(nsjail_log.splitlines()[-8:])
                                  + "\n(set sandbox.jail to bwrap or none to run without nsjail)")
    stderr = capture.stream("stderr")
    if settings.jail == "bwrap" and returncode == 1 and stderr.text.startswith("bwrap: "):
        raise JailUnavailable(f"bubblewrap could not start the jail: {stderr.text.strip()[:500]}"
                              " (as root, bwrap runs as sandbox.uid: the workspaces root and toolchain must be readable by it)")
    exit_code, signal_number = returncode, None
    ended = NSJAIL_ENDED.findall(nsjail_log)
    if status_inside is not None:  # the jail's first process saw the command end: its status, a signal as -N
        exit_code, signal_number = (status_inside, None) if status_inside >= 0 else (None, -status_inside)
    elif returncode < 0:
        exit_code, signal_number = None, -returncode
    elif ended and returncode > 128:  # nsjail's log tells a signal from a program that exited 128+N itself
        status, killed_by = ended[-1]
        exit_code, signal_number = (None, int(killed_by)) if killed_by else (int(status), None)
    elif settings.jail != "none" and returncode > 128 and returncode - 128 < signal.NSIG:
        exit_code, signal_number = None, returncode - 128  # nsjail and bwrap report a signal as 128+N
    stats = group.stats() if group is not None else None
    limits = []
    if timed_out or NSJAIL_TIME_LIMIT in nsjail_log:
        limits.append("time")
    if stats is not None and stats.oom_kills or stats is None and ("MemoryError" in stderr.text or "Cannot allocate memory" in stderr.text):
        limits.append("memory")  # without a cgroup, the address-space rlimit makes allocations fail instead
    if stats is not None and stats.pids_limit_hits or stats is None and "Resource temporarily unavailable" in stderr.text:
        limits.append("processes")
    if capture.exceeded:
        limits.append("output")
    if signal_number == signal.SIGXFSZ or "File too large" in stderr.text:
        limits.append("file_size")
    if signal_number == signal.SIGSYS:
        limits.append("seccomp")
    if disk_full:
        limits.append("disk")
    cpu = stats.cpu_s if stats is not None and stats.cpu_s is not None else usage.ru_utime + usage.ru_stime
    peak = stats.memory_peak_bytes / 2**20 if stats is not None and stats.memory_peak_bytes else usage.ru_maxrss / 1024
    report = RunReport(exit_code=exit_code, signal=signal.Signals(signal_number).name if signal_number else None,
                       stdout=capture.stream("stdout"), stderr=stderr, wall_s=round(wall, 4), cpu_s=round(cpu, 4),
                       memory_peak_mb=round(peak, 1), limits_hit=limits, jail=settings.jail)
    report._tails = {name: bytes(tail).decode("utf-8", errors="replace") for name, tail in capture.tail.items()}
    return report
