"""A driver in a submitted job whose runtime env already sets what `--log-dir` adds for the workers
(`ray job submit --runtime-env-json '{"env_vars": {"TRAJFORGE_LOG_DIR": ...}}'`, the way a job gets an environment
variable): Ray refused the driver's `ray.init` with a ValueError ("Failed to merge the Job's runtime env ...")."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from helpers import REPO

DRIVER = """
import logging, os, sys
import ray
from trajforge.cluster import init_ray
from trajforge.logs import setup_logging

setup_logging("INFO", stem="probe")  # --log-dir from $TRAJFORGE_LOG_DIR, as the job's environment gives it
init_ray("local")

@ray.remote
def work():
    logging.getLogger("trajforge.test").info("from a worker")
    return os.getpid()

print(ray.get(work.remote()))
"""


def test_a_job_given_its_log_dir_in_its_runtime_env_runs_and_its_workers_log_there(tmp_path):
    """What Ray's job supervisor gives the driver of `ray job submit --runtime-env-json` (its job config in
    RAY_JOB_CONFIG_JSON_ENV_VAR, the env vars in its environment); the driver's `ray.init` merges the two."""
    job = {"runtime_env": {"env_vars": {"TRAJFORGE_LOG_DIR": str(tmp_path), "TEACHER_API_KEY": "k"}}}
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("RAY_ADDRESS", "TRAJFORGE_LOG"))}
    environment.update(job["runtime_env"]["env_vars"], RAY_JOB_CONFIG_JSON_ENV_VAR=json.dumps(job))
    done = subprocess.run([sys.executable, "-c", DRIVER], cwd=REPO, env=environment, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    worker = int(done.stdout.split()[-1])
    [workers_file] = tmp_path.glob("workers-*.jsonl")
    logged = [json.loads(line) for line in workers_file.read_text().splitlines()]
    assert {"msg": "from a worker", "pid": worker} in [{"msg": entry["msg"], "pid": entry["pid"]} for entry in logged]
