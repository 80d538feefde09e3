"""Relative data paths are made absolute in the driver: against the folder the command runs in, and inside a submitted
Ray job's working-dir copy against the project checkout."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from helpers import REPO

from trajforge.errors import ConfigError
from trajforge.settings.job_paths import (
    HOME_VARIABLE,
    JOB_CONFIG_VARIABLE,
    absolute_config_file,
    absolute_data_paths,
    in_job_working_dir,
    names_local_folder,
    project_checkout,
    rebase_in_job,
    with_absolute_paths,
)

JOB_ENV = {JOB_CONFIG_VARIABLE: json.dumps({"runtime_env": {"working_dir": "gcs://_ray_pkg_0123.zip"}, "metadata": {}})}


def test_only_a_job_with_a_working_dir_counts():
    assert in_job_working_dir(JOB_ENV)
    assert not in_job_working_dir({})
    assert not in_job_working_dir({JOB_CONFIG_VARIABLE: json.dumps({"runtime_env": {}, "metadata": {}})})
    assert not in_job_working_dir({JOB_CONFIG_VARIABLE: "not json"})


def test_the_checkout_is_the_editable_install_or_trajforge_home(tmp_path):
    assert project_checkout({}) == REPO  # make venv installs this checkout in editable mode
    assert project_checkout({HOME_VARIABLE: str(tmp_path)}) == tmp_path


def test_relative_paths_resolve_against_the_checkout_and_absolute_ones_stay(tmp_path):
    env = {**JOB_ENV, HOME_VARIABLE: str(tmp_path / "project")}
    assert rebase_in_job({"build.lake": "./lake", "other": tmp_path, "unset": None}, "--lake /shared/lake", env) == \
        [("build.lake", str(tmp_path / "project" / "lake"))]
    assert rebase_in_job({"build.lake": tmp_path}, "--lake /shared/lake", env) == []
    assert rebase_in_job({"build.lake": "lake"}, "--lake /shared/lake", {HOME_VARIABLE: str(tmp_path)}) == []  # not in a job


def test_without_a_checkout_relative_paths_are_refused_by_name(monkeypatch):
    monkeypatch.setattr("trajforge.settings.job_paths.project_checkout", lambda environ=None: None)
    with pytest.raises(ConfigError, match=r"build\.lake=lake.*--lake /shared/lake.*TRAJFORGE_HOME") as refused:
        rebase_in_job({"build.lake": "lake"}, "--lake /shared/lake", JOB_ENV)
    assert sys.executable in str(refused.value) and "activate the project's .venv before `ray start`" in str(refused.value)


@pytest.mark.parametrize("argv, module, missing", [
    (["--set", "teacher.sample=1"], "pipelines.teacher_srl", "lake/raw/tasks"),
    (["--limit", "1"], "actors.rollout", "lake/raw/tasks"),
])
def test_the_jobs_read_their_relative_lake_from_the_checkout(monkeypatch, capsys, tmp_path, argv, module, missing):
    import importlib

    monkeypatch.setenv(JOB_CONFIG_VARIABLE, JOB_ENV[JOB_CONFIG_VARIABLE])
    monkeypatch.setenv(HOME_VARIABLE, str(tmp_path))
    assert importlib.import_module(module).main(argv) == 2  # an empty checkout: no tasks there, said with the resolved path
    assert f"{tmp_path}/{missing}" in capsys.readouterr().err


def test_the_build_command_refuses_a_relative_lake_without_a_checkout(monkeypatch, capsys):
    from trajforge.cli.main import main

    monkeypatch.setenv(JOB_CONFIG_VARIABLE, JOB_ENV[JOB_CONFIG_VARIABLE])
    monkeypatch.setattr("trajforge.settings.job_paths.project_checkout", lambda environ=None: None)
    assert main(["build", "--lake", "lake"]) == 2
    assert "build.lake=lake" in capsys.readouterr().err


def test_outside_a_job_relative_paths_resolve_against_the_commands_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    paths = {"build.lake": "./lake", "learner.output_dir": Path("runs"), "other": "/abs/lake", "unset": None, "empty": ""}
    assert absolute_data_paths(paths, "--lake /shared/lake", {}) == \
        [("build.lake", str(tmp_path / "lake")), ("learner.output_dir", str(tmp_path / "runs"))]
    assert absolute_data_paths({"lake": "lake"}, "--lake /shared/lake", {}, cwd="/elsewhere") == [("lake", "/elsewhere/lake")]
    assert absolute_data_paths({"lake": "~/lake"}, "--lake /shared/lake", {}) == [("lake", str(Path.home() / "lake"))]


def test_inside_a_job_they_resolve_against_the_checkout_as_before(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = {**JOB_ENV, HOME_VARIABLE: str(tmp_path / "project")}
    assert absolute_data_paths({"build.lake": "lake"}, "--lake /shared/lake", env) == [("build.lake", str(tmp_path / "project" / "lake"))]
    assert absolute_data_paths({"home": "~/lake", "empty": "", "unset": None}, "--lake /shared/lake", env) == \
        [("home", str(Path.home() / "lake"))]  # a home is a home in a job too, and nothing is made of an empty path
    assert absolute_config_file("configs/prompts.yaml") == tmp_path / "configs" / "prompts.yaml"  # the job's copy holds it
    assert absolute_config_file(None) is None


def test_a_model_setting_is_a_folder_only_where_one_of_that_name_is(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "mine").mkdir(parents=True)
    assert names_local_folder("models/mine", {})
    assert not names_local_folder("small", {}) and not names_local_folder("Qwen/Qwen3-14B", {})
    for name in ("small", "packaged"):  # the embedded models' names, even beside a folder of that name
        (tmp_path / name).mkdir()
        assert not names_local_folder(name, {})
    assert not names_local_folder(str(tmp_path / "models" / "mine"), {}) and not names_local_folder(None, {})
    assert names_local_folder("mine", {**JOB_ENV, HOME_VARIABLE: str(tmp_path / "models")})


def test_settings_get_their_path_fields_absolute_and_keep_their_types(tmp_path, monkeypatch):
    from pipelines.teacher_srl import TeacherSettings

    monkeypatch.chdir(tmp_path)
    settings = with_absolute_paths(TeacherSettings(lake="lake", tasks="/abs/tasks.jsonl", model="m"), "teacher", ("lake", "tasks", "reports"),
                                   "--lake /shared/lake")
    assert (settings.lake, settings.tasks, settings.reports) == (tmp_path / "lake", Path("/abs/tasks.jsonl"), tmp_path / "reports" / "teacher")
    assert isinstance(settings.lake, Path) and settings.model == "m"


def test_jail_folders_in_a_job_never_refuse_it(tmp_path, monkeypatch, caplog):
    """The jails' workspaces are each node's scratch space: in a job, each worker's copy of the working dir holds them.
    Their logs go to the checkout; with none known they stay in the job's copy, with a warning, instead of a refusal."""
    from sandbox.settings import absolute_sandbox_settings, load_sandbox_settings

    monkeypatch.chdir(tmp_path)
    for name, value in JOB_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv(HOME_VARIABLE, str(tmp_path / "project"))
    settings = absolute_sandbox_settings(load_sandbox_settings())
    assert settings.logs_dir == tmp_path / "project" / "logs" / "sandbox" and not settings.workspaces_root.is_absolute()
    monkeypatch.delenv(HOME_VARIABLE)
    monkeypatch.setattr("trajforge.settings.job_paths.project_checkout", lambda environ=None: None)
    with caplog.at_level("WARNING", logger="sandbox.settings"):
        settings = absolute_sandbox_settings(load_sandbox_settings())
    assert not settings.logs_dir.is_absolute() and "pass --set sandbox.logs_dir=/shared/logs/sandbox" in caplog.text


def test_a_ray_client_driver_refuses_relative_paths_by_name_and_keeps_jail_folders_on_the_workers(tmp_path, monkeypatch, caplog):
    """`ray://`: the command runs on another machine than the cluster's workers; its folder means nothing there."""
    from sandbox.settings import absolute_sandbox_settings, load_sandbox_settings
    from trajforge.cli import serve_cmd
    from trajforge.cli.common import merge_assignments
    from trajforge.cli.main import build_parser

    monkeypatch.chdir(tmp_path)
    client = {"RAY_ADDRESS": "ray://head:10001"}
    with pytest.raises(ConfigError, match=r"Ray Client \(ray://head:10001\).*build\.lake=lake.*--lake /shared/lake"):
        absolute_data_paths({"build.lake": "lake", "other": "/shared/other"}, "--lake /shared/lake", client)
    assert absolute_data_paths({"build.lake": "/shared/lake"}, "--lake /shared/lake", client) == []
    assert absolute_data_paths({"lake": "lake"}, "--lake /shared/lake", {}, address="auto") == [("lake", str(tmp_path / "lake"))]
    with pytest.raises(ConfigError, match="lake=./lake"):  # serve's --address names the client the same way
        serve_cmd.load(merge_assignments(build_parser().parse_args(["serve", "--address", "ray://head:10001"])))
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    with caplog.at_level("WARNING", logger="sandbox.settings"):
        jails = absolute_sandbox_settings(load_sandbox_settings())
    assert not jails.workspaces_root.is_absolute() and not jails.logs_dir.is_absolute() and "on the cluster's workers" in caplog.text
