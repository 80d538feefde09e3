"""What each command hands to Ray carries absolute paths: Ray's tasks, actors and Train workers run in a folder of
their own (on a `ray start --head` cluster the one `ray start` ran in), so a relative `./lake`, `./runs`, model folder
or prompts file given to the command (or its default) is resolved here, against the folder the command runs in.

Each test runs a command in a temporary folder with relative paths and stops it where it would start Ray work,
keeping what it was about to hand over. `tests/pipelines/test_ray_job.py` runs the teacher and a rollout for real on
a cluster started in another folder."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from pipelines.synth_templates import candidates


class Handed(Exception):
    """Raised in place of the Ray work; `handed` holds what it was given."""

    def __init__(self, *handed):
        super().__init__("stopped where Ray work starts")
        self.handed = handed


def _stop_at(monkeypatch, target: str) -> None:
    def stop(*args, **kwargs):
        raise Handed(*args, *kwargs.values())

    monkeypatch.setattr(target, stop)


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """The command's folder, with the synthetic tasks at the default lake's place."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("TRAJFORGE__"):
            monkeypatch.delenv(name)
    tasks = tmp_path / "lake" / "raw" / "tasks" / "synth_rules" / "tasks.jsonl"
    tasks.parent.mkdir(parents=True)
    tasks.write_text("".join(json.dumps(task) + "\n" for task in candidates()[:2]))
    return tmp_path


def _sandbox_folders(sandbox, folder: Path) -> None:
    assert sandbox.workspaces_root.is_relative_to(folder) and sandbox.logs_dir == folder / "logs" / "sandbox"


def test_teacher_workers_get_the_lake_reports_prompts_and_jail_folders_absolute(folder, monkeypatch):
    from pipelines.teacher_srl import PROJECT, main

    (folder / "configs").mkdir()
    shutil.copy(PROJECT / "configs" / "teacher_prompts.yaml", folder / "configs" / "teacher_prompts.yaml")
    _stop_at(monkeypatch, "pipelines.teacher_srl.run")
    with pytest.raises(Handed) as stopped:
        main(["--set", "teacher.sample=1"])
    settings, sandbox = stopped.value.handed
    assert (settings.lake, settings.reports) == (folder / "lake", folder / "reports" / "teacher")
    assert settings.prompts == folder / "configs" / "teacher_prompts.yaml"  # found here: this folder's, not the project's
    assert settings.tasks_file == folder / "lake" / "raw" / "tasks" / "synth_rules" / "tasks.jsonl"
    _sandbox_folders(sandbox, folder)


def test_rollout_actors_get_the_lake_model_folder_prompts_and_jail_folders_absolute(folder, monkeypatch):
    from actors.rollout import main

    (folder / "models" / "mine").mkdir(parents=True)
    (folder / "prompts.yaml").write_text("system: s\nuser: u\nfeedback: f\n")
    _stop_at(monkeypatch, "actors.rollout.rollout")
    with pytest.raises(Handed) as stopped:
        main(["--limit", "1", "--set", "actors.model=models/mine", "--set", "actors.prompts=prompts.yaml",
              "--set", "sandbox.logs_dir=jail-logs", "--set", "sandbox.wall_time_s=7"])
    settings, tasks = stopped.value.handed[:2]
    assert len(tasks) == 1 and settings.lake == folder / "lake" and settings.state_db == folder / "lake" / "state" / "states.db"
    assert settings.model == str(folder / "models" / "mine") and settings.prompts == folder / "prompts.yaml"
    from sandbox.settings import load_sandbox_settings

    jails = settings.sandbox  # configs/sandbox.yaml with the command's --set sandbox.*, its folders absolute
    assert jails.logs_dir == folder / "jail-logs" and jails.wall_time_s == 7 and jails.workspaces_root.is_relative_to(folder)
    assert jails.toolchain == load_sandbox_settings().toolchain


def test_the_embedded_model_is_made_in_the_commands_folder_not_by_each_actor(folder, monkeypatch):
    from actors.settings import absolute_actor_settings, load_actor_settings

    made = []
    monkeypatch.setattr("trajforge.small_model.ensure_small_model", lambda directory: made.append(Path(directory)) or Path(directory))
    assert absolute_actor_settings(load_actor_settings(), make_model=False).model == "small" and not made
    settings = absolute_actor_settings(load_actor_settings())
    assert made == [folder / "models" / "small-qwen3"] and settings.model == str(made[0])
    openai = load_actor_settings(assignments=[("actors.engine", "openai"), ("actors.model", "small")])
    assert absolute_actor_settings(openai).model == "small"  # a served model's name, not a folder


def test_the_generate_front_starts_actors_with_absolute_paths(folder, monkeypatch):
    from serve_apps.generate.app import _actor_settings

    (folder / "models" / "mine").mkdir(parents=True)
    monkeypatch.setenv("TRAJFORGE__ACTORS__MODEL", "models/mine")
    monkeypatch.setenv("TRAJFORGE__ACTORS__LAKE", "lake")
    settings = _actor_settings()
    assert settings.lake == folder / "lake" and settings.model == str(folder / "models" / "mine")
    _sandbox_folders(settings.sandbox, folder)


def test_synth_rules_verifies_into_an_absolute_lake_with_absolute_jail_folders(folder, monkeypatch):
    from pipelines import synth_rules

    verify = synth_rules.run
    _stop_at(monkeypatch, "pipelines.synth_rules.run")
    with pytest.raises(Handed) as stopped:
        synth_rules.main(["--limit", "1"])
    assert stopped.value.handed[0] == folder / "lake"

    class Dataset:  # where run() hands the verifying actors their jail policy
        def map_batches(self, stage, **options):
            raise Handed(options["fn_constructor_kwargs"]["settings"])

    monkeypatch.setattr("ray.init", lambda **options: None)
    monkeypatch.setattr("ray.data.from_items", lambda rows: Dataset())
    with pytest.raises(Handed) as stopped:
        verify(Path("lake"), limit=1, sandbox_assignments=[("sandbox.logs_dir", "jail-logs")])
    (sandbox,) = stopped.value.handed
    assert sandbox.workspaces_root == folder / "lake" / "tmp" / "sandbox" and sandbox.logs_dir == folder / "jail-logs"


def test_build_tasks_get_an_absolute_lake_and_tokenizer_folder(folder, monkeypatch):
    from trajforge.cli.main import main

    (folder / "models" / "tokenizer").mkdir(parents=True)
    _stop_at(monkeypatch, "pipelines.build.run_build")
    monkeypatch.setattr("trajforge.cluster.warn_if_cpus_taken", lambda *args: None)  # it would start a Ray
    with pytest.raises(Handed) as stopped:
        main(["build", "--no-progress", "--set", "build.tokenizer=models/tokenizer"])
    settings = stopped.value.handed[0]
    assert settings.lake == folder / "lake" and settings.tokenizer == str(folder / "models" / "tokenizer")
    assert settings.embedding.model == "packaged"  # a name: left as it is


def test_train_workers_get_absolute_data_output_and_resume_paths(folder, monkeypatch):
    from learner.train import main

    _stop_at(monkeypatch, "learner.train.launch")
    with pytest.raises(Handed) as stopped:
        main(["--set", "learner.resume=runs/sft/checkpoints/step-000001"])
    settings = stopped.value.handed[0]
    assert (settings.data.lake, settings.output_dir, settings.small_model_dir) == \
        (folder / "lake", folder / "runs", folder / "models" / "small-qwen3")
    assert settings.resume == str(folder / "runs" / "sft" / "checkpoints" / "step-000001")
