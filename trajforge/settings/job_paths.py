"""Where relative data paths point, made absolute in the driver before anything goes to Ray.

Ray's tasks, actors, Ray Data stages and Ray Train workers do not run in the driver's folder: on a cluster
started with `ray start --head` they run in the folder `ray start` ran in, so a relative `./lake` handed to
them names another lake than the one the user meant (and the default `./lake`, `./runs` or a model folder
silently fill that other folder). Every entry point therefore hands Ray only absolute paths
(`absolute_data_paths`): a relative path means the folder the command runs in.

Inside a submitted Ray job, `ray job submit --working-dir . -- python -m ...`, the driver runs in a temporary copy of the working directory (under Ray's
`runtime_resources/working_dir_files/`), without the ignored data folders, so a relative `./lake` or
`./runs` taken as it is would read an empty lake or write results that vanish with the copy. The jobs
therefore resolve relative data paths against the project checkout instead, as if the command had
run there: the folder named by `TRAJFORGE_HOME`, else the checkout the installed `trajforge` is an
editable install of (`make venv` installs it so, on the head node where the job's driver runs). With
neither, they refuse relative paths and name them (`rebase_in_job`).
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote, urlparse

from trajforge.errors import ConfigError

JOB_CONFIG_VARIABLE = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray's job supervisor for the entrypoint
HOME_VARIABLE = "TRAJFORGE_HOME"
MODEL_NAMES = ("small", "packaged")  # the embedded models' names, never a folder of that name

log = logging.getLogger(__name__)
SettingsModel = TypeVar("SettingsModel")
PathValue = str | Path | None


def job_runtime_env(environ: Mapping[str, str] | None = None) -> dict:
    """The runtime env of the submitted job this process is the driver of (`--working-dir`, `--runtime-env-json`),
    as Ray's job supervisor hands it over; empty outside a job."""
    raw = (os.environ if environ is None else environ).get(JOB_CONFIG_VARIABLE)
    if not raw:
        return {}
    try:
        return (json.loads(raw) or {}).get("runtime_env") or {}
    except (ValueError, AttributeError):
        return {}


def in_job_working_dir(environ: Mapping[str, str] | None = None) -> bool:
    """True in the driver of a job submitted with a `working_dir` (the process runs in its uploaded copy)."""
    return bool(job_runtime_env(environ).get("working_dir"))


def project_checkout(environ: Mapping[str, str] | None = None) -> Path | None:
    """`TRAJFORGE_HOME`, else the source folder of an editable install of trajforge; None when neither is known."""
    home = (os.environ if environ is None else environ).get(HOME_VARIABLE)
    if home:
        return Path(home)
    for distribution in importlib.metadata.distributions(name="trajforge"):
        try:
            origin = json.loads(distribution.read_text("direct_url.json") or "{}")
        except ValueError:
            continue
        url = urlparse(str(origin.get("url", "")))
        folder = Path(unquote(url.path))
        if (origin.get("dir_info") or {}).get("editable") and url.scheme == "file" and (folder / "pyproject.toml").is_file():
            return folder
    return None


def rebase_in_job(paths: Mapping[str, str | Path | None], example: str,
                  environ: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """In a job's working-dir copy, (field, absolute path) for every relative path in `paths` (field -> path),
    resolved against the project checkout; nothing outside a job. A ConfigError names them when no checkout is known."""
    if not in_job_working_dir(environ):
        return []
    relative = {field: Path(path) for field, path in paths.items() if _relative(path)}
    if not relative:
        return []
    root = project_checkout(environ)
    if root is None:
        named = ", ".join(f"{field}={path}" for field, path in relative.items())
        raise ConfigError(f"this Ray job runs in a temporary copy of --working-dir, so these relative paths would point into it "
                          f"and their data would be lost: {named}. Pass absolute paths on storage the cluster shares, e.g. "
                          f"{example}, or name the project folder with --runtime-env-json "
                          f"'{{\"env_vars\": {{\"{HOME_VARIABLE}\": \"/path/to/trajforge\"}}}}'. (The project is found through "
                          f"the editable install `make venv` makes; this job's python, {sys.executable}, has none: jobs run the "
                          "python on the PATH `ray start` saw, so activate the project's .venv before `ray start`.)")
    rebased = [(field, str(root / path)) for field, path in relative.items()]
    log.info("relative paths resolved against the project checkout %s: %s", root, ", ".join(f"{f}={p}" for f, p in rebased))
    return rebased


def relative_base(environ: Mapping[str, str] | None = None, cwd: str | Path | None = None) -> Path | None:
    """The folder relative data paths mean: in a job's working-dir copy the project checkout (None when unknown),
    elsewhere `cwd`, by default the folder this process runs in."""
    if in_job_working_dir(environ):
        return project_checkout(environ)
    return Path(cwd) if cwd is not None else Path.cwd()


def ray_client_address(environ: Mapping[str, str] | None = None, address: str | None = None) -> str | None:
    """The `ray://...` address when the driver reaches the cluster through Ray Client (`address`, else `$RAY_ADDRESS`):
    it then runs on another machine than the cluster's workers, whose folders they cannot see. None otherwise."""
    chosen = str(address or (os.environ if environ is None else environ).get("RAY_ADDRESS", ""))
    return chosen if chosen.startswith("ray://") else None


def absolute_data_paths(paths: Mapping[str, PathValue], example: str, environ: Mapping[str, str] | None = None,
                        cwd: str | Path | None = None, address: str | None = None) -> list[tuple[str, str]]:
    """(field, absolute path) for every relative path in `paths` (field -> path; None, empty and absolute ones are left
    out), resolved against the folder the command runs in (`cwd`), or in a job's working-dir copy against the project
    checkout (`rebase_in_job`, which refuses them, naming `example`, when no checkout is known); a `~/...` path is
    expanded. The pairs are `--set` assignments: a caller reloads its settings with them before it hands them to Ray.
    A driver on Ray Client (`ray_client_address`, `address` as the command was given it) has no folder the cluster
    sees: its relative paths are refused by name."""
    client = ray_client_address(environ, address)
    if client and (relative := [f"{field}={path}" for field, path in paths.items() if _relative(path)]):
        raise ConfigError(f"this command reaches the cluster through Ray Client ({client}) from a "
                          f"machine whose folders the cluster's workers cannot see, so these relative paths mean nothing there: "
                          f"{', '.join(relative)}. Pass absolute paths on storage the cluster shares, e.g. {example}")
    homes = [(field, str(Path(path).expanduser())) for field, path in paths.items()
             if path is not None and str(path).startswith("~") and Path(path).expanduser().is_absolute()]
    relative = {field: path for field, path in paths.items() if _relative(path)}
    if in_job_working_dir(environ):
        return homes + rebase_in_job(relative, example, environ)
    base = relative_base(environ, cwd)
    return homes + [(field, str(base / Path(path))) for field, path in relative.items()]


def _relative(path: PathValue) -> bool:
    """A path that means something only against a folder: not None or empty, not absolute, not `~/...` (a home)."""
    return path is not None and bool(str(path)) and not Path(path).expanduser().is_absolute()


def absolute_config_file(path: PathValue, cwd: str | Path | None = None) -> Path | None:
    """A relative config file (a prompts file) against the folder the command runs in, in a job too: its
    working-dir copy holds the project's files, and its workers run in that copy as well. None stays None."""
    if path is None or not str(path):
        return None
    return (Path(cwd) if cwd is not None else Path.cwd()) / Path(path).expanduser()


def names_local_folder(name: PathValue, environ: Mapping[str, str] | None = None, cwd: str | Path | None = None) -> bool:
    """True when `name` (a model setting) is a relative path to a folder that exists where relative paths resolve (a
    model directory), rather than a name such as `small`, `packaged` or a hub id, which stays as it is."""
    if not _relative(name) or str(name) in MODEL_NAMES:
        return False
    base = relative_base(environ, cwd)
    return base is not None and (base / Path(name)).is_dir()


def with_absolute_paths(settings: SettingsModel, section: str, fields: Iterable[str], example: str,
                        environ: Mapping[str, str] | None = None, cwd: str | Path | None = None) -> SettingsModel:
    """A copy of `settings` (a pydantic model of the config section `section`) whose top-level path `fields` are
    absolute (`absolute_data_paths`), each keeping its type (a Path stays a Path, a str a str)."""
    current = {name: getattr(settings, name) for name in fields}
    absolute = absolute_data_paths({f"{section}.{name}": value for name, value in current.items()}, example, environ, cwd)
    update = {field.removeprefix(f"{section}."): path for field, path in absolute}
    return settings.model_copy(update={name: type(current[name])(path) for name, path in update.items()})
