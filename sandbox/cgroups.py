"""One cgroup per jailed run: memory, process and CPU limits on the whole tree, and its counters afterwards.

nsjail can create cgroups itself, but it removes them when the run ends, taking the counters that
tell an OOM kill from a time-limit kill (both are a SIGKILL, exit 137). So each run gets its own
cgroup here, the launcher shell joins it before it execs the jail, and the counters are read before
the cgroup is removed. Works on cgroup v2 and on v1 (memory, pids, cpu, cpuacct hierarchies); the
cgroups are nested under this process's own, so a container's limits still apply.
"""

from __future__ import annotations

import logging
import os
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)
ROOT = Path("/sys/fs/cgroup")
V1_CONTROLLERS = ("memory", "pids", "cpu", "cpuacct")


@dataclass
class CgroupStats:
    memory_peak_bytes: int | None = None
    oom_kills: int = 0
    pids_limit_hits: int = 0
    cpu_s: float | None = None


def _own_paths() -> dict[str, str]:
    """controller -> this process's cgroup path ('' for the v2 unified hierarchy)."""
    paths = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path
    return paths


def _read_int(path: Path, default: int | None = None) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return default


def _read_keyed(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


@dataclass
class RunCgroup:
    """A cgroup (or, on v1, one per controller) for one run. `join_command` moves a shell into it."""

    version: int
    dirs: dict[str, Path] = field(default_factory=dict)

    @classmethod
    def create(cls, memory_bytes: int, max_processes: int, cpus: int) -> RunCgroup | None:
        """None (logged once at debug) where cgroups cannot be written: the caller falls back to rlimits."""
        name = f"trajforge-sandbox-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            own = _own_paths()
            if (ROOT / "cgroup.controllers").exists():
                group = cls(2, {"": ROOT / own.get("", "/").lstrip("/") / name})
            else:
                group = cls(1, {c: ROOT / c / own.get(c, "/").lstrip("/") / name for c in V1_CONTROLLERS if (ROOT / c).is_dir()})
                if "memory" not in group.dirs or "pids" not in group.dirs:
                    return None
            for path in group.dirs.values():
                path.mkdir()
            group._limit(memory_bytes, max_processes, cpus)
            return group
        except OSError as exc:
            log.debug("cgroups unavailable (%s); limits fall back to rlimits", exc)
            try:
                group.remove()
            except Exception:
                pass
            return None

    def _write(self, controller: str, name: str, value: str, required: bool = True) -> None:
        try:
            (self.dirs[controller] / name).write_text(value)
        except (OSError, KeyError):
            if required:
                raise

    def _limit(self, memory_bytes: int, max_processes: int, cpus: int) -> None:
        quota = f"{cpus * 100_000} 100000"
        if self.version == 2:
            self._write("", "memory.max", str(memory_bytes))
            self._write("", "memory.swap.max", "0", required=False)
            self._write("", "pids.max", str(max_processes))
            self._write("", "cpu.max", quota, required=False)
            return
        self._write("memory", "memory.limit_in_bytes", str(memory_bytes))
        self._write("memory", "memory.memsw.limit_in_bytes", str(memory_bytes), required=False)
        self._write("memory", "memory.swappiness", "0", required=False)
        self._write("pids", "pids.max", str(max_processes))
        self._write("cpu", "cpu.cfs_period_us", "100000", required=False)
        self._write("cpu", "cpu.cfs_quota_us", str(cpus * 100_000), required=False)

    def join_command(self) -> str:
        """Shell text that moves the current shell ($$) into every hierarchy of this cgroup."""
        return "; ".join(f"echo $$ > '{path / 'cgroup.procs'}'" for path in self.dirs.values())

    def stats(self) -> CgroupStats:
        if self.version == 2:
            d = self.dirs[""]
            usage = _read_keyed(d / "cpu.stat", "usage_usec")
            return CgroupStats(
                memory_peak_bytes=_read_int(d / "memory.peak"),
                oom_kills=_read_keyed(d / "memory.events", "oom_kill"),
                pids_limit_hits=_read_keyed(d / "pids.events", "max"),
                cpu_s=usage / 1e6 if usage else None,
            )
        memory, pids = self.dirs["memory"], self.dirs["pids"]
        usage = _read_int(self.dirs["cpuacct"] / "cpuacct.usage") if "cpuacct" in self.dirs else None
        try:
            oom_control = (memory / "memory.oom_control").read_text()
        except OSError:
            oom_control = ""
        if "oom_kill " in oom_control:
            oom_kills = _read_keyed(memory / "memory.oom_control", "oom_kill")
        else:  # kernels without the counter: failed charges mean the limit was reached
            oom_kills = int((_read_int(memory / "memory.failcnt", 0) or 0) > 0)
        return CgroupStats(
            memory_peak_bytes=_read_int(memory / "memory.max_usage_in_bytes"),
            oom_kills=oom_kills,
            pids_limit_hits=_read_keyed(pids / "pids.events", "max"),
            cpu_s=usage / 1e9 if usage is not None else None,
        )

    def kill_all(self) -> None:
        """SIGKILL whatever is still in the cgroup (a jail that outlived its launcher)."""
        for path in self.dirs.values():
            try:
                pids = [int(pid) for pid in (path / "cgroup.procs").read_text().split()]
            except OSError:
                continue
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def remove(self) -> None:
        for attempt in range(50):
            remaining = []
            for path in self.dirs.values():
                try:
                    path.rmdir()
                except FileNotFoundError:
                    pass
                except OSError:
                    remaining.append(path)
            if not remaining:
                return
            self.kill_all()
            time.sleep(0.02)
        log.warning("could not remove cgroups %s", remaining)
