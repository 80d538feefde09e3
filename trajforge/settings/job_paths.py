"""Data paths inside a submitted Ray job: `ray job submit --working-dir . -- python -m ...`.

Such a job's driver runs in a temporary copy of the working directory (under Ray's
`runtime_resources/working_dir_files/`), without the ignored data folders, so a relative `./lake` or
`./runs` taken as it is would read an empty lake or write results that vanish with the copy. The jobs
therefore resolve relative data paths against the project checkout instead, as if the command had
run there: the folder named by `TRAJFORGE_HOME`, else the checkout the installed `trajforge` is an
editable install of (`make venv` installs it so, on the head node where the job's driver runs). With
neither, they refuse relative paths and name them.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote, urlparse

from trajforge.errors import ConfigError

JOB_CONFIG_VARIABLE = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray's job supervisor for the entrypoint
HOME_VARIABLE = "TRAJFORGE_HOME"

log = logging.getLogger(__name__)


def in_job_working_dir(environ: Mapping[str, str] | None = None) -> bool:
    """True in the driver of a job submitted with a `working_dir` (the process runs in its uploaded copy)."""
    raw = (os.environ if environ is None else environ).get(JOB_CONFIG_VARIABLE)
    if not raw:
        return False
    try:
        runtime_env = (json.loads(raw) or {}).get("runtime_env") or {}
    except (ValueError, AttributeError):
        return False
    return bool(runtime_env.get("working_dir"))


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
    relative = {field: Path(path) for field, path in paths.items() if path is not None and not Path(path).is_absolute()}
    if not relative:
        return []
    root = project_checkout(environ)
    if root is None:
        named = ", ".join(f"{field}={path}" for field, path in relative.items())
        raise ConfigError(f"this Ray job runs in a temporary copy of --working-dir, so these relative paths would point into it "
                          f"and their data would be lost: {named}. Pass absolute paths on storage the cluster shares, e.g. "
                          f"{example}, or name the project folder with --runtime-env-json "
                          f"'{{\"env_vars\": {{\"{HOME_VARIABLE}\": \"/path/to/trajforge\"}}}}'")
    rebased = [(field, str(root / path)) for field, path in relative.items()]
    log.info("relative paths resolved against the project checkout %s: %s", root, ", ".join(f"{f}={p}" for f, p in rebased))
    return rebased
