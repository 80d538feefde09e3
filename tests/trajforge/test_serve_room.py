"""`trajforge serve` says when the applications' replicas cannot all be placed: Serve's `serve.run` waits for them
without a word (its controller's warning goes to a log file), so `--set ingest.num_replicas=3` beside embed on two
cores hung at "deploying embed" for ever."""

from __future__ import annotations

import logging

import pytest

from serve_apps.embed import app as embed_app
from serve_apps.embed.settings import load_settings as load_embed
from serve_apps.ingest.app import build_app as build_ingest
from trajforge.serving import warn_if_replicas_wait


@pytest.fixture
def two_cores(monkeypatch):
    """A running Ray of 2 CPUs, all free, without starting one (as tests/trajforge/test_cluster.py fakes it)."""
    import ray

    monkeypatch.setattr("trajforge.cluster.init_ray", lambda *args, **kwargs: None)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    monkeypatch.setattr(ray, "available_resources", lambda: {"CPU": 2.0})


def _apps(tmp_path, ingest: dict, embed: dict):
    return [("ingest", build_ingest({"lake": str(tmp_path / "lake"), **ingest})), ("embed", embed_app.build(load_embed(embed, environ={})))]


def test_replicas_that_fit_alone_but_not_together_are_named_with_values_that_fit(two_cores, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="trajforge.cluster"):
        warn_if_replicas_wait(_apps(tmp_path, {"num_replicas": 1}, {}))
        assert caplog.text == ""  # the shipped config: 0.5 + 1 of 2 CPUs
        warn_if_replicas_wait(_apps(tmp_path, {"num_replicas": 3}, {}))
    assert ("the cluster has 2 CPUs; the applications' replicas run at once and ask for 2.5 CPUs together "
            "(ingest.num_cpus=0.5 x 3 + embed.num_cpus=1)") in caplog.text
    assert "--set ingest.num_cpus=0.4 --set embed.num_cpus=0.8" in caplog.text


def test_autoscaled_and_gpu_replicas_are_counted_and_replaced_applications_left_out(two_cores, tmp_path, caplog):
    scaled = {"autoscaling_config": {"min_replicas": 3, "max_replicas": 4}, "num_cpus": 1.0}
    with caplog.at_level(logging.WARNING, logger="trajforge.cluster"):
        warn_if_replicas_wait(_apps(tmp_path, {}, scaled)[1:])
    assert "the embed application's replicas ask for embed.num_cpus=1 CPUs each (3 of them: 3)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="trajforge.cluster"):
        warn_if_replicas_wait(_apps(tmp_path, {}, {"num_gpus": 1})[1:])
    assert "the cluster has 0 GPUs; the embed application's replicas ask for embed.num_gpus=1 GPUs each" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="trajforge.cluster"):
        warn_if_replicas_wait([])  # every application replaces a running one: nothing to check
    assert caplog.text == ""
