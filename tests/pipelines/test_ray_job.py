"""`ray job submit` of the teacher loop and the learner against a head started with `ray start --head`, logs via `ray job logs`;
and commands run on the head node against that cluster from another folder than the one `ray start` ran in."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import httpx
import pytest
from helpers import JOB_EXCLUDES as EXCLUDES
from helpers import RAY, REPO, free_port
from sft_builds import rows, write_build

from pipelines.synth_templates import candidates


class Head(NamedTuple):
    dashboard: str
    """The job server's address (`ray job submit --address`)."""
    env: dict[str, str]
    gcs: str
    """HOST:PORT, what a driver joining the cluster takes as RAY_ADDRESS."""
    folder: Path
    """Where `ray start --head` ran: the working folder of the cluster's workers."""


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """A separate Ray head (its own ports and temp dir), killed as a process group: never `ray stop`,
    which would stop the test session's Ray too. It is started in a folder of its own, as a user may start it anywhere."""
    # as a user with the venv activated: `python` and `ray` are the venv's, for the head and its jobs
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    dashboard = free_port()
    temp_dir = Path(f"/tmp/rj{os.getpid()}")  # short: Ray's socket paths are length-limited
    folder, port = tmp_path_factory.mktemp("ray-start-folder"), free_port()
    command = [RAY, "start", "--head", "--block", "--num-cpus", "2", "--port", str(port), "--dashboard-host", "127.0.0.1",
               "--dashboard-port", str(dashboard), "--dashboard-agent-listen-port", str(free_port()), "--ray-client-server-port",
               str(free_port()), "--temp-dir", str(temp_dir), "--disable-usage-stats"]
    process = subprocess.Popen(command, env=env, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{address}/api/version", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(1)
    else:
        subprocess.run(["pkill", "-9", "-s", str(process.pid)], check=False)
        pytest.fail("the Ray head's job server did not come up in 120 s")
    yield Head(address, env, f"127.0.0.1:{port}", folder)
    subprocess.run(["pkill", "-9", "-s", str(process.pid)], check=False)
    process.wait(timeout=30)
    shutil.rmtree(temp_dir, ignore_errors=True)


def _submit(address, env, runtime_env, *entrypoint, timeout=300):
    submit = subprocess.run([RAY, "job", "submit", "--address", address, "--working-dir", ".", "--runtime-env-json", runtime_env, "--",
                             *entrypoint], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert submit.returncode == 0, submit.stdout[-3000:] + submit.stderr[-2000:]
    job_id = re.search(r"raysubmit_\w+", submit.stdout + submit.stderr).group(0)
    logs = subprocess.run([RAY, "job", "logs", "--address", address, job_id], env=env, capture_output=True, text=True, timeout=60)
    assert logs.returncode == 0
    return logs.stdout


def test_a_job_finds_the_project_checkout_it_was_installed_from(head):
    """Where relative data paths resolve in a job: the checkout `make venv` installed trajforge from, not the copy."""
    address, env = head.dashboard, head.env
    code = "import os; from trajforge.settings.job_paths import *; print('CHECKOUT', in_job_working_dir(), project_checkout(), os.getcwd())"
    out = _submit(address, env, EXCLUDES, "python", "-c", code)
    (line,) = [line for line in out.splitlines() if line.startswith("CHECKOUT")]
    _, in_job, checkout, cwd = line.split()
    assert in_job == "True" and checkout == str(REPO) and cwd != str(REPO)


def test_teacher_loop_runs_as_a_submitted_job_with_relative_paths_and_its_logs_are_readable(head, tmp_path):
    """The issue's `ray job submit --working-dir . -- python -m pipelines.teacher_srl`: the default relative lake and
    reports, and a relative tasks file, resolved against the project folder (TRAJFORGE_HOME here, to keep the
    checkout's own lake out of the test)."""
    address, env = head.dashboard, head.env
    tasks = [task for index, task in enumerate(candidates()) if index % 20 == 0]
    (tmp_path / "tasks.jsonl").write_text("\n".join(json.dumps(task) for task in tasks) + "\n")
    runtime_env = json.dumps({**json.loads(EXCLUDES), "env_vars": {"TRAJFORGE_HOME": str(tmp_path)}})
    out = _submit(address, env, runtime_env, "python", "-m", "pipelines.teacher_srl", "--config", "configs/teacher.yaml",
                  "--set", "teacher.tasks=tasks.jsonl", "--set", "teacher.sample=0", "--set", "teacher.workers=1")
    assert "# Teacher SRL run: oracle" in out and f'"ran": {len(tasks)}' in out
    assert list((tmp_path / "lake" / "raw" / "trajectories").rglob("*.jsonl"))
    assert list((tmp_path / "reports").rglob("metrics.md"))


def test_the_learner_runs_as_a_submitted_job(head, tiny_model, tmp_path):
    """The README's `ray job submit --working-dir . -- python -m learner.train ...`, with absolute data paths."""
    address, env = head.dashboard, head.env
    write_build(tmp_path / "lake", "tiny", rows(6, dev=2, seed=3))
    settings = {"learner.model": tiny_model, "learner.output_dir": tmp_path / "runs", "learner.run_name": "job", "learner.data.seq_len": 256,
                "learner.data.window": 3, "learner.train.max_steps": 2, "learner.train.gradient_accumulation_steps": 1,
                "learner.eval.every_steps": 0, "learner.eval.max_sequences": 2, "learner.checkpoint.every_steps": 0,
                "learner.workers.device": "cpu", "learner.workers.cpus_per_worker": 0.5}
    assignments = [item for key, value in settings.items() for item in ("--set", f"{key}={value}")]
    out = _submit(address, env, EXCLUDES, "python", "-m", "learner.train", "--lake", str(tmp_path / "lake"), "--build", "tiny",
                  *assignments, timeout=400)
    metric_lines = [json.loads(line) for line in out.splitlines() if line.startswith('{"event"')]
    assert [line["step"] for line in metric_lines if line["event"] == "train"] == [1, 2]
    assert '"finished": true' in out
    assert (tmp_path / "runs" / "job" / "hf" / "config.json").is_file()


def _run_on_the_head(head: Head, folder: Path, *argv: str) -> str:
    """`trajforge ARGV` run in `folder` on the head node, joining the cluster (RAY_ADDRESS), as a user runs a command there."""
    done = subprocess.run([sys.executable, "-m", "trajforge", *argv], cwd=folder, env={**head.env, "RAY_ADDRESS": head.gcs},
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_commands_on_the_head_write_to_their_own_folder_not_to_the_one_ray_start_ran_in(head, tiny_model, tmp_path):
    """The workers of a joined cluster run in the folder `ray start --head` ran in; the teacher's and the rollout's
    relative paths (the default ./lake, the sandbox's logs, a model folder) still mean the folder the command runs in."""
    tasks = [task for index, task in enumerate(candidates()) if index % 40 == 0][:3]
    tasks_file = tmp_path / "lake" / "raw" / "tasks" / "synth_rules" / "tasks.jsonl"
    tasks_file.parent.mkdir(parents=True)
    tasks_file.write_text("".join(json.dumps(task) + "\n" for task in tasks))
    shutil.copytree(tiny_model, tmp_path / "models" / "tiny")

    taught = _run_on_the_head(head, tmp_path, "teacher", "--set", "teacher.sample=0", "--set", "teacher.workers=1",
                              "--set", "teacher.mistake_rate=0")
    assert f'"ran": {len(tasks)}' in taught and f'"verified": {len(tasks)}' in taught
    assert list((tmp_path / "reports" / "teacher").glob("metrics.md"))
    rolled = _run_on_the_head(head, tmp_path, "rollout", "--limit", "1", "--set", "actors.model=models/tiny", "--set", "actors.num_cpus=0.5",
                              "--set", "actors.sandbox_workers=1", "--set", "actors.loop.max_steps=1", "--set", "actors.loop.max_tokens=16",
                              "--set", "actors.loop.state_max_tokens=16")
    assert f"step records in {tmp_path / 'lake' / 'raw' / 'trajectories'}" in rolled

    writers = sorted(path.name.split("-")[0] for path in (tmp_path / "lake" / "raw" / "trajectories").glob("*.jsonl"))
    assert writers == ["actor0", "teacher0"]
    assert (tmp_path / "lake" / "state" / "states.db").is_file() and (tmp_path / "lake" / "state" / "teacher_states.db").is_file()
    assert list((tmp_path / "logs" / "sandbox").glob("*.jsonl"))
    assert sorted(path.name for path in head.folder.iterdir()) == []  # no lake, logs, .sandbox or models/ where ray start ran
