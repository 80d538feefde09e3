"""The jail policy, loaded from `configs/sandbox.yaml` (`sandbox:` section) with env and `--set` overrides."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from trajforge.errors import ConfigError
from trajforge.settings import load_section

log = logging.getLogger(__name__)
DEFAULT_PATH = Path(__file__).resolve().parents[1] / "configs" / "sandbox.yaml"
SECTION = "sandbox"
MIN_RUN_MEMORY_MB = 64
"""Of `memory_mb`, what the jail's memory-backed folders (tmpfs) must leave to the run's processes when they are full."""
MEMORY_BACKED = {"nsjail": ("disk_mb", "tmp_mb", "shm_mb"), "bwrap": ("tmp_mb", "shm_mb"), "none": ()}
"""The folders each jail keeps in memory, charged to the run's memory cgroup: nsjail's workspace, /tmp and /dev/shm are
tmpfs; bwrap's /tmp and /dev/shm (its workspace is the host's folder, measured); no jail: none (the host's disk)."""


class SandboxSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    jail: Literal["nsjail", "bwrap", "none"] = "nsjail"
    """Which isolation runs actions and tests; `none` only when chosen here, and every result says so."""
    cpus: int = Field(default=2, ge=1)
    """CPUs a run may use (CPU affinity and a CFS quota)."""
    memory_mb: int = Field(default=4096, ge=16)
    """Memory of the whole process tree (cgroup; the address-space rlimit where cgroups are unavailable)."""
    wall_time_s: float = Field(default=30.0, gt=0)
    """Wall-clock limit of one run."""
    max_processes: int = Field(default=256, ge=4)
    """Processes and threads of one run (cgroup pids controller)."""
    max_file_size_mb: int = Field(default=256, ge=1)
    """Largest file a run may write (RLIMIT_FSIZE)."""
    max_open_files: int = Field(default=1024, ge=16)
    """RLIMIT_NOFILE in the jail."""
    shm_mb: int = Field(default=256, ge=1)
    """Size of the jail's /dev/shm (multiprocessing needs it)."""
    tmp_mb: int = Field(default=512, ge=1)
    """Size of the jail's private /tmp (a tmpfs: memory, counted in `memory_mb`)."""
    disk_mb: int = Field(default=512, ge=1)
    """Size of the workspace as a run sees it: in nsjail a tmpfs of this size (memory, counted in `memory_mb`) that
    the workspace is copied into and back; a run that fills it, or /tmp, hits the `disk` limit and its writes are
    discarded. With bwrap or no jail the workspace is measured while it runs (sandbox/disk.py)."""
    uid: int = Field(default=65534, ge=1)
    """Unprivileged uid the jail runs as, inside and on the host (0 is refused)."""
    gid: int = Field(default=65534, ge=1)
    """Unprivileged gid the jail runs as."""
    output_cap_bytes: int = Field(default=1 << 20, ge=1024)
    """Bytes of stdout and of stderr kept in a result; the rest is dropped and the stream flagged as truncated."""
    output_kill_bytes: int = Field(default=64 << 20, ge=1024)
    """A run writing more than this to stdout and stderr together is killed (limit `output`)."""
    diff_cap_bytes: int = Field(default=64 << 10, ge=1024)
    """Bytes of an action's diff kept in its result (whole lines); the rest is dropped and `diff_truncated` set."""
    toolchain: list[str] = Field(default_factory=lambda: ["/usr", "/lib", "/lib64", "/bin", "/sbin", "{prefix}", "{base_prefix}"])
    """Host paths mounted read-only at the same place in the jail ({prefix}: this Python's environment)."""
    workspaces_root: Path = Path(".sandbox")
    """Where `prepare_workspace` creates workspaces (one directory each)."""
    logs_dir: Path = Path("logs/sandbox")
    """One JSON-lines file per task: every action or test run and its result."""
    include_hidden_and_ignored: bool = True
    """Rewrite hidden and git-ignored files too (ast-grep skips them by default)."""
    allowed_test_programs: list[str] = Field(default_factory=lambda: [
        "python", "pytest", "node", "npx", "java", "javac", "mvn", "gradle", "ast-grep"])
    """Programs a given test command may start (the specification's allowlist of binaries, by name, a version suffix
    such as python3.11 allowed); anything else is an invalid test spec. No shell by default: the check reads only the
    program, so a listed `sh` would let `sh -c '...'` run anything. The frameworks' defaults are not checked (the
    Java runner is our own `/bin/sh -c` script). The jail stays the boundary."""

    @field_validator("output_kill_bytes")
    @classmethod
    def _kill_above_cap(cls, value: int, info: Any) -> int:
        cap = info.data.get("output_cap_bytes", 0)
        if value < cap:
            raise ValueError(f"must be at least output_cap_bytes ({cap})")
        return value

    @model_validator(mode="after")
    def _memory_fits(self) -> SandboxSettings:
        problem = memory_problem(self)
        if problem:
            raise ValueError(problem)
        return self


def memory_problem(settings: SandboxSettings) -> str | None:
    """What is wrong when the jail's tmpfs folders, full, leave its processes less than MIN_RUN_MEMORY_MB of
    `memory_mb` (a run that fills its workspace would then be killed for memory instead of hitting the disk limit, or
    no test could start at all); None when they fit."""
    fields = MEMORY_BACKED[settings.jail]
    used = sum(getattr(settings, name) for name in fields)
    if settings.memory_mb - used >= MIN_RUN_MEMORY_MB:
        return None
    names = " + ".join(f"sandbox.{name}" for name in fields)
    sizes = " + ".join(str(getattr(settings, name)) for name in fields)
    return (f"sandbox.memory_mb ({settings.memory_mb}) must be at least {MIN_RUN_MEMORY_MB} MB more than {names} "
            f"({sizes} = {used} MB): with jail {settings.jail} these folders are tmpfs, memory counted in memory_mb, and the "
            f"run's processes need the rest; raise sandbox.memory_mb to {used + MIN_RUN_MEMORY_MB} or more, or lower them")


def check_memory(settings: SandboxSettings) -> SandboxSettings:
    """`settings`, or ConfigError naming the fields when `memory_problem` finds one (for settings made with `model_copy`,
    which skips the validators)."""
    problem = memory_problem(settings)
    if problem:
        raise ConfigError(f"invalid sandbox settings: {problem}")
    return settings


def load_sandbox_settings(path: str | Path | None = None, assignments: Iterable[tuple[str, Any]] = ()) -> SandboxSettings:
    """File < TRAJFORGE__SANDBOX__* environment < `assignments` (from `--set sandbox.x=y`)."""
    source = Path(path) if path else DEFAULT_PATH
    return load_section(SandboxSettings, source, SECTION, assignments)


def absolute_sandbox_settings(settings: SandboxSettings | None = None, assignments: Iterable[tuple[str, Any]] = ()) -> SandboxSettings:
    """`settings` (default: configs/sandbox.yaml with `assignments`, as this process loads it) for jails that run in
    Ray workers, which work in a folder of their own (`ray start`'s, on a cluster): `logs_dir` made absolute here,
    against this command's folder (in a `--working-dir` job, against the project checkout; with none known, or from a
    Ray Client driver, the logs stay where the workers run, with a warning). `workspaces_root`, each node's scratch
    space, is made absolute only outside a job and Ray Client: in a job every worker uses its own copy of the
    working dir, which each node has."""
    from trajforge.settings.job_paths import in_job_working_dir, project_checkout, ray_client_address, with_absolute_paths

    settings = settings or load_sandbox_settings(None, assignments)
    example = "--set sandbox.logs_dir=/shared/logs/sandbox"
    client = ray_client_address() is not None
    if not (client or in_job_working_dir()):
        return with_absolute_paths(settings, SECTION, ("workspaces_root", "logs_dir"), example)
    if client or project_checkout() is None:
        if not settings.logs_dir.expanduser().is_absolute():
            where = "on the cluster's workers, in their own folders" if client else "in this job's temporary copy of --working-dir"
            log.warning("sandbox.logs_dir=%s stays %s; pass %s to keep the jails' logs", settings.logs_dir, where, example)
        return settings
    return with_absolute_paths(settings, SECTION, ("logs_dir",), example)
