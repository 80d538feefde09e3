"""Relative data paths are refused inside a submitted Ray job's working-dir copy, and only there."""

from __future__ import annotations

import json

import pytest

from trajforge.errors import ConfigError
from trajforge.settings.job_paths import JOB_CONFIG_VARIABLE, in_job_working_dir, require_absolute_in_job

JOB_ENV = {JOB_CONFIG_VARIABLE: json.dumps({"runtime_env": {"working_dir": "gcs://_ray_pkg_0123.zip"}, "metadata": {}})}


def test_only_a_job_with_a_working_dir_counts():
    assert in_job_working_dir(JOB_ENV)
    assert not in_job_working_dir({})
    assert not in_job_working_dir({JOB_CONFIG_VARIABLE: json.dumps({"runtime_env": {}, "metadata": {}})})
    assert not in_job_working_dir({JOB_CONFIG_VARIABLE: "not json"})


def test_relative_paths_are_named_and_absolute_ones_pass(tmp_path):
    with pytest.raises(ConfigError, match=r"build\.lake=lake.*--lake /shared/lake"):
        require_absolute_in_job({"build.lake": "lake", "other": tmp_path, "unset": None}, "--lake /shared/lake", JOB_ENV)
    require_absolute_in_job({"build.lake": tmp_path, "unset": None}, "--lake /shared/lake", JOB_ENV)
    require_absolute_in_job({"build.lake": "lake"}, "--lake /shared/lake", {})  # outside a job, relative is fine


@pytest.mark.parametrize("argv, module", [
    (["--set", "learner.train.max_steps=1"], "learner.train"),
    (["--lake", "lake"], "pipelines.synth_rules"),
    (["--set", "teacher.sample=1"], "pipelines.teacher_srl"),
])
def test_the_jobs_refuse_relative_paths_before_starting(monkeypatch, capsys, argv, module):
    import importlib

    monkeypatch.setenv(JOB_CONFIG_VARIABLE, JOB_ENV[JOB_CONFIG_VARIABLE])
    assert importlib.import_module(module).main(argv) == 2
    assert "temporary copy of --working-dir" in capsys.readouterr().err


def test_the_build_command_refuses_a_relative_lake(monkeypatch, capsys):
    from trajforge.cli.main import main

    monkeypatch.setenv(JOB_CONFIG_VARIABLE, JOB_ENV[JOB_CONFIG_VARIABLE])
    assert main(["build", "--lake", "lake"]) == 2
    assert "build.lake=lake" in capsys.readouterr().err
