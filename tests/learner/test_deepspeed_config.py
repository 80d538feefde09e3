"""The DeepSpeed config the learner hands each worker, made from configs/learner.yaml and its overrides."""

import pytest

from learner.engine import deepspeed_config
from learner.settings import load_learner_settings
from trajforge.settings import ConfigError


def test_stage3_settings_reach_deepspeed():
    settings = load_learner_settings(assignments=[("learner.zero.param_persistence_threshold", 123_456),
                                                  ("learner.zero.offload_optimizer", True),
                                                  ("learner.train.micro_batch_size", 3),
                                                  ("learner.train.gradient_accumulation_steps", 5)])
    config = deepspeed_config(settings, world_size=2, on_gpu=True)
    zero = config["zero_optimization"]
    assert zero["stage"] == 3
    assert zero["stage3_param_persistence_threshold"] == 123_456
    assert zero["offload_optimizer"] == {"device": "cpu", "pin_memory": True}
    assert "offload_param" not in zero
    assert config["train_batch_size"] == 3 * 5 * 2
    assert config["bf16"] == {"enabled": True}


def test_the_cpu_default_is_fp32_without_pinned_memory():
    settings = load_learner_settings(assignments=[("learner.zero.offload_params", True)])
    config = deepspeed_config(settings, world_size=2, on_gpu=False)
    assert config["bf16"] == {"enabled": False} and config["fp16"]["enabled"] is False
    assert config["zero_optimization"]["offload_param"] == {"device": "cpu", "pin_memory": False}
    assert config["zero_optimization"]["stage3_param_persistence_threshold"] == 10_000


def test_a_negative_persistence_threshold_names_the_field():
    with pytest.raises(ConfigError, match="param_persistence_threshold"):
        load_learner_settings(assignments=[("learner.zero.param_persistence_threshold", -1)])


@pytest.mark.parametrize("weight", [0.0, -1.0, float("inf"), float("nan")])
def test_a_build_weight_that_is_not_a_positive_number_names_the_field(weight):
    """An infinite weight passed `gt=0` and failed in the workers, after Ray started, as 'Probabilities contain NaN'."""
    with pytest.raises(ConfigError, match=r"learner\.data\.builds\.0\.weight"):
        load_learner_settings(assignments=[("learner.data.builds", [{"build": "b1", "weight": weight}])])


@pytest.mark.parametrize(("stage", "field"), [(2, "offload_params"), (1, "offload_params"), (0, "offload_optimizer")])
def test_an_offload_the_stage_would_ignore_names_the_field(stage, field):
    """DeepSpeed keeps everything on the GPU without a word when the stage has no such offload."""
    with pytest.raises(ConfigError, match=rf"learner\.zero\.{field}.*needs zero\.stage"):
        load_learner_settings(assignments=[("learner.zero.stage", stage), (f"learner.zero.{field}", True)])
    load_learner_settings(assignments=[("learner.zero.stage", stage)])  # the stage alone is fine


def test_optimizer_offload_is_accepted_from_stage_1():
    settings = load_learner_settings(assignments=[("learner.zero.stage", 1), ("learner.zero.offload_optimizer", True)])
    assert deepspeed_config(settings, world_size=2, on_gpu=True)["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
