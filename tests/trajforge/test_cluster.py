"""configs/cluster.yaml: the topology loads strictly, and pins are kept only where a node advertises them."""

from __future__ import annotations

import logging

import pytest

from trajforge.cluster import advertised, load_cluster_settings
from trajforge.errors import ConfigError


def test_the_shipped_topology_pins_learner_and_actors():
    cluster = load_cluster_settings()
    assert cluster.learner.resources == {"learner_node": 1} and cluster.actors.resources == {"actor_node": 1}
    assert cluster.learner.gpus_per_node == 2 and cluster.actors.nodes == 3


def test_a_typo_names_the_field(tmp_path):
    path = tmp_path / "cluster.yaml"
    path.write_text("cluster:\n  learner:\n    gpus_per_nod: 2\n")
    with pytest.raises(ConfigError, match="gpus_per_nod"):
        load_cluster_settings(path)


def test_only_advertised_resources_are_kept_and_the_rest_are_logged(caplog):
    total = {"CPU": 16.0, "GPU": 3.0, "actor_node": 3.0}
    with caplog.at_level(logging.INFO, logger="trajforge.cluster"):
        kept = advertised({"actor_node": 1, "learner_node": 1}, total, "the generation actors", warn=True)
    assert kept == {"actor_node": 1}
    assert [(record.levelno, "'learner_node'" in record.getMessage()) for record in caplog.records] == [(logging.WARNING, True)]


def test_a_job_whose_tasks_cannot_get_their_cpus_says_so(serve_url, caplog):
    """The session's Serve holds some of its Ray's 2 CPUs, as `trajforge serve` does on a head node: tasks of 2 CPUs wait."""
    import ray

    from trajforge.cluster import warn_if_cpus_taken

    with caplog.at_level(logging.WARNING, logger="trajforge.cluster"):
        warn_if_cpus_taken(0.001, "build.cpus_per_task", "the build's tasks")
        assert caplog.text == ""
        warn_if_cpus_taken(2.0, "build.cpus_per_task", "the build's tasks")
    assert ray.available_resources().get("CPU", 0) < 2.0
    assert "of the cluster's 2 CPUs are free" in caplog.text and "the build's tasks ask for build.cpus_per_task=2 CPUs each" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="trajforge.cluster"):
        warn_if_cpus_taken(8.0, "build.cpus_per_task", "the build's tasks")
    assert "the cluster has 2 CPUs; the build's tasks ask for build.cpus_per_task=8" in caplog.text


def test_trajforge_build_warns_before_its_tasks_wait(serve_url, tmp_path, capsys, monkeypatch):
    import pipelines.build
    from trajforge.cli.main import main

    started = []
    monkeypatch.setattr(pipelines.build, "run_build", lambda settings, **_: started.append(settings.cpus_per_task) or MANIFEST)
    assert main(["build", "--lake", str(tmp_path), "--json", "--set", "build.cpus_per_task=0.001", "--set", "build.embedding.cpus=0.001"]) == 0
    assert "wait until" not in capsys.readouterr().err
    assert main(["build", "--lake", str(tmp_path), "--json", "--set", "build.cpus_per_task=2", "--set", "build.embedding.cpus=0.001"]) == 0
    warned = capsys.readouterr().err
    assert "the build's tasks ask for build.cpus_per_task=2 CPUs each" in warned and "build.embedding.cpus" not in warned
    assert main(["build", "--lake", str(tmp_path), "--json", "--set", "build.cpus_per_task=0.001", "--set", "build.embedding.cpus=2"]) == 0
    assert "the build's embedding actors (--no-embed: none) ask for build.embedding.cpus=2" in capsys.readouterr().err
    assert main(["build", "--lake", str(tmp_path), "--json", "--no-embed", "--set", "build.cpus_per_task=0.001", "--set", "build.embedding.cpus=2"]) == 0
    assert "wait until" not in capsys.readouterr().err
    assert started == [0.001, 2.0, 0.001, 0.001]


MANIFEST = {"build_id": "stub"}
