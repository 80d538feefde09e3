"""Replica counts of the Serve applications: a fixed num_replicas, or Ray Serve autoscaling checked when the settings
load (Ray ignores a key it does not know, so a misspelt one would silently leave the application unscaled)."""

from __future__ import annotations

import pytest

from serve_apps.embed import app as embed_app
from serve_apps.embed.settings import load_settings as load_embed
from serve_apps.generate import app as generate_app
from serve_apps.generate.settings import load_settings as load_generate
from trajforge.errors import ConfigError

SCALING = {"min_replicas": 1, "max_replicas": 3, "target_ongoing_requests": 8}


@pytest.mark.parametrize("load", [load_embed, load_generate])
def test_a_misspelt_or_impossible_autoscaling_config_is_refused_when_the_settings_load(load):
    with pytest.raises(ConfigError, match=r"target_ongoing_request'\].*target_ongoing_requests"):
        load({"autoscaling_config": {"min_replicas": 1, "target_ongoing_request": 8}}, environ={})
    with pytest.raises(ConfigError, match="max_replicas"):
        load({"autoscaling_config": {"min_replicas": 3, "max_replicas": 1}}, environ={})
    assert load({"autoscaling_config": SCALING}, environ={}).autoscaling_config == SCALING


def test_generate_and_embed_deploy_with_autoscaling_in_place_of_a_fixed_count():
    generate = generate_app.build(load_generate({"engine": "openai", "upstream_url": "http://upstream/v1", "autoscaling_config": SCALING}, environ={}))
    embed = embed_app.build(load_embed({"autoscaling_config": SCALING}, environ={}))
    for bound in (generate, embed):
        config = bound._bound_deployment._deployment_config
        assert (config.autoscaling_config.min_replicas, config.autoscaling_config.max_replicas) == (1, 3)
        assert config.autoscaling_config.target_ongoing_requests == 8
    fixed = generate_app.build(load_generate({"engine": "openai", "upstream_url": "http://upstream/v1", "num_replicas": 2}, environ={}))
    assert fixed._bound_deployment._deployment_config.num_replicas == 2
    assert fixed._bound_deployment._deployment_config.autoscaling_config is None
