"""`trajforge train --estimate`: DeepSpeed's memory estimate for the configured model, without its weights."""

from __future__ import annotations

import pytest

from learner.estimate import estimate
from learner.settings import LearnerSettings
from learner.train import main
from trajforge.cluster import load_cluster_settings
from trajforge.errors import ConfigError


def test_the_estimate_says_whether_qwen3_14b_fits_two_5090s():
    gpus = load_cluster_settings().learner.gpus_per_node
    offloaded = estimate(LearnerSettings.model_validate({"model": "qwen3-14b", "zero": {"offload_optimizer": True}}), gpus)
    on_gpu = estimate(LearnerSettings.model_validate({"model": "qwen3-14b"}), gpus)
    assert 14.7e9 < offloaded.total_params < 14.9e9
    assert offloaded.gpu_total_gb < 32 * 0.9 < on_gpu.gpu_total_gb


def test_a_model_named_as_on_the_hub_is_estimated_from_its_built_in_shape(tmp_path, monkeypatch, capsys):
    """`Qwen/Qwen3-14B`, the name a user without the weights knows, was refused as a missing folder."""
    monkeypatch.chdir(tmp_path)  # no folder of that name here
    assert main(["--estimate", "--set", "learner.model=Qwen/Qwen3-14B", "--set", "learner.zero.offload_optimizer=true"]) == 0
    out = capsys.readouterr().out
    assert "model Qwen/Qwen3-14B (built-in shape qwen3-14b" in out and "14.77 B parameters" in out and "fits 2 x" in out
    local = tmp_path / "Qwen" / "Qwen3-14B"
    local.mkdir(parents=True)  # a folder of that name is what the name means, even a wanting one
    with pytest.raises(ConfigError, match="is not a model directory with a config.json"):
        estimate(LearnerSettings.model_validate({"model": "Qwen/Qwen3-14B"}), 2)


def test_the_default_small_model_is_estimated_before_it_exists(tmp_path, capsys):
    missing = tmp_path / "never-made"
    assert main(["--estimate", "--set", f"learner.small_model_dir={missing}"]) == 0
    assert not missing.exists()  # an estimate makes nothing
    out = capsys.readouterr().out
    assert "model small:" in out and "fits 2 x" in out
    small = estimate(LearnerSettings.model_validate({"small_model_dir": str(missing)}), 2)
    assert 0 < small.total_params < 5e6
    assert "0.00 B" not in out and f"model small: {round(small.total_params, -3) // 1000} K parameters" in out


def test_parameter_counts_read_in_their_unit():
    from learner.estimate import count_text

    assert [count_text(n) for n in (14_768_307_200, 596_049_920, 3_140_000, 918_272)] == ["14.77 B", "0.60 B", "3.1 M", "918 K"]


def test_a_model_path_without_a_config_names_the_field(tmp_path):
    with pytest.raises(ConfigError, match="learner.model"):
        estimate(LearnerSettings.model_validate({"model": str(tmp_path)}), 2)
    assert main(["--estimate", "--set", f"learner.model={tmp_path}"]) != 0


@pytest.mark.parametrize(("config_json", "said"), [("{not json", "cannot be read as a Hugging Face config"),
                                                   ('{"model_type": "no-such-model"}', "cannot be read as a Hugging Face config"),
                                                   ('{"model_type": "vit", "hidden_size": 64}', "a vit model is not a causal LM")],
                         ids=["not-json", "unknown-model-type", "not-a-causal-lm"])
def test_a_config_json_that_names_no_causal_lm_is_one_line_naming_the_field(tmp_path, capsys, config_json, said):
    (tmp_path / "config.json").write_text(config_json)
    assert main(["--estimate", "--set", f"learner.model={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "learner.model: " in err and said in err and "Traceback" not in err


def test_the_estimate_spreads_the_states_over_every_node_of_the_learner(capsys):
    """It counted 2 nodes x 2 GPUs as one node of 4: the right per-GPU share, but per-node host memory of all four."""
    assert main(["--estimate", "--set", "learner.model=qwen3-14b", "--set", "learner.zero.offload_optimizer=true",
                 "--set", "cluster.learner.nodes=2", "--set", "cluster.learner.gpus_per_node=2", "--set", "learner.workers.count=4"]) == 0
    out = capsys.readouterr().out
    assert "HW: Setup with 2 nodes, 2 GPUs per node." in out and "fits 4 x RTX 5090" in out
    settings = LearnerSettings.model_validate({"model": "qwen3-14b", "zero": {"offload_optimizer": True}})
    one_node, two_nodes = estimate(settings, 2), estimate(settings, 2, nodes=2)
    assert two_nodes.gpu_states_gb < one_node.gpu_states_gb and two_nodes.cpu_states_gb < one_node.cpu_states_gb


def test_the_estimate_follows_the_configured_zero_stage(capsys):
    """It used ZeRO-3's figures for every stage: stage 2 keeps whole 16-bit parameters on each GPU, so it needs more."""
    by_stage = {stage: estimate(LearnerSettings.model_validate({"model": "qwen3-14b", "zero": {"stage": stage}}), 2) for stage in (0, 2, 3)}
    assert by_stage[3].gpu_states_gb < by_stage[2].gpu_states_gb < by_stage[0].gpu_states_gb
    assert main(["--estimate", "--set", "learner.model=qwen3-14b", "--set", "learner.zero.stage=2"]) == 0
    out = capsys.readouterr().out
    assert "ZeRO stage 2: DeepSpeed's ZeRO-2 estimate" in out and "offload_param=" not in out and "zero stage 2," in out


def test_the_estimate_is_for_the_gpus_the_workers_use_not_every_gpu_of_the_learner(capsys):
    """It spread the states over every learner GPU in configs/cluster.yaml: 2 workers on 2 nodes x 2 GPUs were
    estimated as 4 GPUs, half the per-GPU share they need."""
    from learner.estimate import training_gpus

    assert [training_gpus(*case) for case in ((2, 2, 2), (4, 2, 2), (8, 2, 2), (3, 2, 2), (1, 1, 2), (2, 1, 0))] == \
        [(2, 1), (2, 2), (2, 2), (3, 1), (1, 1), (2, 1)]
    assert main(["--estimate", "--set", "learner.model=qwen3-14b", "--set", "learner.zero.offload_optimizer=true",
                 "--set", "learner.workers.count=1"]) == 0
    out = capsys.readouterr().out
    assert "trained by 1 worker(s), one per GPU (learner.workers.count is 1; configs/cluster.yaml gives the learner 1 x 2 GPUs)" in out
    assert "HW: Setup with 1 node, 1 GPU per node." in out and "does NOT fit 1 x RTX 5090" in out
    assert main(["--estimate", "--set", "learner.model=qwen3-14b", "--set", "learner.workers.count=4"]) == 0
    assert ("trained by 2 worker(s), one per GPU: learner.workers.count is 4, more than the 1 x 2 GPUs configs/cluster.yaml "
            "gives the learner") in capsys.readouterr().out  # it was capped without a word


def test_the_host_memory_without_offload_is_not_called_offloaded_and_a_miss_says_what_to_try(capsys):
    assert main(["--estimate", "--set", "learner.model=qwen3-14b"]) == 0
    out = capsys.readouterr().out
    assert "GB per learner node to load the model (nothing is offloaded)" in out and "offloaded states" not in out
    assert "does NOT fit 2 x RTX 5090 (32 GB each, 10% kept as headroom); to fit, try learner.zero.offload_optimizer=true" in out
    assert main(["--estimate", "--set", "learner.model=qwen3-14b", "--set", "learner.zero.offload_optimizer=true"]) == 0
    out = capsys.readouterr().out
    assert "GB per learner node for the offloaded states" in out and "fits 2 x RTX 5090 (32 GB each, 10% kept as headroom)\n" in out
