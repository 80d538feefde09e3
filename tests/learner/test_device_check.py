"""Settings CPU workers cannot run are refused by the driver before Ray starts; nothing is refused for GPU workers."""

from __future__ import annotations

import pytest
from sft_builds import rows, write_build

from learner.settings import LearnerSettings
from learner.train import prepare
from trajforge.errors import ConfigError


@pytest.fixture
def lake(tmp_path):
    write_build(tmp_path / "lake", "b1", rows(4, dev=1))
    return tmp_path / "lake"


def settings_for(lake, model, device: str, **train) -> LearnerSettings:
    return LearnerSettings.model_validate({"model": str(model), "data": {"lake": str(lake), "cache_dir": str(lake.parent / "cache")},
                                           "output_dir": str(lake.parent / "runs"), "train": train,
                                           "workers": {"device": device}}).absolute()


@pytest.mark.parametrize(("setting", "value", "named"), [
    ("attention", "flash_attention_2", "flash-attn's kernels need CUDA GPUs"),
    ("attention", "flex_attention", "PyTorch.s FlexAttention has no backward on the CPU"),
    ("loss", "liger", "Liger's kernels need GPUs"),
])
def test_a_gpu_only_setting_is_refused_for_cpu_workers_before_ray_starts(lake, tiny_model, setting, value, named):
    with pytest.raises(ConfigError, match=rf"workers train on the CPU \(learner\.workers\.device=cpu\), which cannot run "
                                          rf"learner\.train\.{setting}={value} \({named}"):
        prepare(settings_for(lake, tiny_model, "cpu", **{setting: value}))


def test_every_refused_setting_is_named_in_the_one_line(lake, tiny_model):
    with pytest.raises(ConfigError) as refused:
        prepare(settings_for(lake, tiny_model, "cpu", attention="flash_attention_2", loss="liger"))
    assert "\n" not in str(refused.value) and "attention=flash_attention_2" in str(refused.value) and "loss=liger" in str(refused.value)


def test_fp16_is_refused_on_a_cpu_without_it_and_kept_on_one_with_it(lake, tiny_model, monkeypatch):
    monkeypatch.setattr("learner.device_check.cpu_has_fp16", lambda: False)
    with pytest.raises(ConfigError, match=r"learner\.train\.precision=fp16 \(this CPU's oneDNN has no fp16"):
        prepare(settings_for(lake, tiny_model, "cpu", precision="fp16"))
    monkeypatch.setattr("learner.device_check.cpu_has_fp16", lambda: True)
    prepare(settings_for(lake, tiny_model, "cpu", precision="fp16"))


def test_auto_on_a_machine_without_gpus_is_refused_before_ray_starts(lake, tiny_model, monkeypatch):
    monkeypatch.setattr("learner.device_check.gpus_before_joining", lambda: 0.0)
    with pytest.raises(ConfigError, match=r"learner\.workers\.device=auto and .* has no GPU\), which cannot run learner\.train\.attention=flex"):
        prepare(settings_for(lake, tiny_model, "auto", attention="flex_attention"))


@pytest.mark.parametrize(("device", "gpus"), [("gpu", None), ("auto", 2.0), ("auto", None)])
def test_gpu_settings_pass_when_the_workers_have_gpus_or_may_have_them(lake, tiny_model, monkeypatch, device, gpus):
    """A head node without a GPU launching onto the learner node's GPUs: the driver's lack of a GPU refuses nothing
    (`auto` with a cluster still to join is checked once Ray says what it has)."""
    monkeypatch.setattr("learner.device_check.gpus_before_joining", lambda: gpus)
    monkeypatch.setattr("learner.device_check.cpu_has_fp16", lambda: False)
    prepare(settings_for(lake, tiny_model, device, attention="flash_attention_2", loss="liger", precision="fp16"))


def test_auto_counts_this_machines_gpus_only_when_it_starts_its_own_ray(monkeypatch):
    from learner.device_check import gpus_before_joining

    monkeypatch.setattr("ray.is_initialized", lambda: False)
    monkeypatch.setattr("trajforge.cluster.ray_to_join", lambda address: "10.0.0.1:6379")
    assert gpus_before_joining() is None  # a running cluster: its GPUs are known once joined
    monkeypatch.setattr("trajforge.cluster.ray_to_join", lambda address: None)
    monkeypatch.setenv("RAY_OVERRIDE_RESOURCES", '{"GPU": 2}')
    assert gpus_before_joining() == 2.0  # Ray's own count for the Ray it would start


def test_auto_on_a_joined_cluster_without_gpus_is_refused_before_any_worker(ray_cluster, lake, tiny_model, monkeypatch):
    from learner.train import launch

    monkeypatch.setattr("learner.device_check.gpus_before_joining", lambda: None)  # as for a cluster not joined yet
    monkeypatch.setattr("learner.trainer.worker_main", lambda config: pytest.fail("a worker started"))
    with pytest.raises(ConfigError, match=r"learner\.workers\.device=auto and the Ray cluster has no GPU\), which cannot run .*flash_attention_2"):
        launch(settings_for(lake, tiny_model, "auto", attention="flash_attention_2"), echo=False)
