"""A step record's reward labels (`trajforge.trajectories.reward_labels`) as the build and the teacher report read them."""

from __future__ import annotations

import pytest

from pipelines.build.loop_rows import problem, quality_of
from trajforge.trajectories import good_step, reward_labels

OUTPUT = {"think": "t", "action": {"pattern": "a", "rewrite": "b"}, "state_update": {}}
APPLIED = {"action": {"valid": True, "files_changed": ["a.py"]}}


def step(reward) -> dict:
    return {"task_id": "t", "step": 1, "prompt": {}, "state_before": {}, "model_output": OUTPUT, "sandbox_result": APPLIED, "reward": reward}


@pytest.mark.parametrize("reward, labels", [
    ({"verified": True, "matches_gold": False, "tests_pass": None}, {"verified": True, "matches_gold": False, "tests_pass": None}),
    (None, {}),  # section 7's "reward": null, before labels exist
    (1.0, {"verified": True}), (0, {"verified": False}), (-0.5, {"verified": False}), (True, {"verified": True}), (False, {"verified": False}),
])
def test_labels_from_an_object_none_or_a_bare_scalar(reward, labels):
    assert reward_labels(step(reward)) == labels


def test_a_scalar_reward_counts_as_the_verified_label():
    assert good_step(step(1.0)) and not good_step(step(0.0))
    assert quality_of([step(1)]) == 100 and quality_of([step(0)]) == 10
    assert problem(step(1.0)) is None


@pytest.mark.parametrize("reward", ["yes", [1], {"verified"}])
def test_any_other_reward_is_refused_naming_the_shapes_it_may_take(reward):
    with pytest.raises(ValueError, match="reward must be an object of labels"):
        good_step(step(reward))
