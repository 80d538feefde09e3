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
