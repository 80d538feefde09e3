"""Data paths inside a submitted Ray job: `ray job submit --working-dir . -- python -m ...`.

Such a job's driver runs in a temporary copy of the working directory (under Ray's
`runtime_resources/working_dir_files/`), so a relative `./lake` or `./runs` would read an empty lake
or write results that vanish with the copy. The jobs refuse relative data paths there, naming them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from trajforge.errors import ConfigError

JOB_CONFIG_VARIABLE = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray's job supervisor for the entrypoint


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


def require_absolute_in_job(paths: Mapping[str, str | Path | None], example: str, environ: Mapping[str, str] | None = None) -> None:
    """Raise a ConfigError naming every relative path in `paths` (field -> path) when in a job's working-dir copy."""
    if not in_job_working_dir(environ):
        return
    relative = [f"{field}={path}" for field, path in paths.items() if path is not None and not Path(path).is_absolute()]
    if relative:
        raise ConfigError(f"this Ray job runs in a temporary copy of --working-dir, so these relative paths would point into it "
                          f"and their data would be lost: {', '.join(relative)}. Pass absolute paths on storage the cluster shares, "
                          f"e.g. {example}")
