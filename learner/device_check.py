"""Settings the learner's workers cannot run on the CPU, refused on the driver before any worker starts.

On a run without GPUs these fail only inside the workers, once Ray Train has started them and they
have imported DeepSpeed and loaded the model (over a minute on a laptop):
- `train.attention=flash_attention_2`: flash-attn's kernels are CUDA kernels (transformers refuses it
  without the package, which needs a GPU to install);
- `train.attention=flex_attention`: PyTorch's FlexAttention has no backward on the CPU (it fails at the
  first step, after minutes of compiling);
- `train.loss=liger`: Liger's kernels are Triton GPU kernels;
- `train.precision=fp16` on a CPU whose oneDNN has no fp16 (DeepSpeed's CPU accelerator refuses it:
  "Type fp16 is not supported on your device"); bf16 it always accepts.

The device is the one `learner.train.placement` picks: known before Ray starts with
`learner.workers.device` cpu or gpu; with `auto` it follows the Ray cluster's GPUs, known before Ray
starts when the driver starts a Ray of its own (this machine's GPUs, counted as Ray counts them) and
otherwise once it has joined the running cluster, still before any worker starts. Nothing is refused
when the workers train on GPUs, whatever the driver has: a head node without a GPU launching onto the
learner node's GPUs is the usual cluster.

What it does not protect against: CPU workers on another machine whose CPU differs from the driver's
(fp16 is asked of this machine's oneDNN); GPU settings the workers' packages lack (flash-attn, Liger on
the learner node), which only the workers can see.
"""

from __future__ import annotations

from learner.settings import LearnerSettings
from trajforge.errors import ConfigError


def gpus_before_joining() -> float | None:
    """The GPUs of the Ray cluster this driver trains on, where known without joining one: the cluster it already
    joined, or the Ray of its own it would start (no cluster to join: RAY_ADDRESS unset or `local`), whose GPUs are
    this machine's as Ray counts them. None for a running cluster not joined yet."""
    import ray

    if ray.is_initialized():
        return ray.cluster_resources().get("GPU", 0.0)
    from trajforge.cluster import ray_to_join

    if ray_to_join(None) is not None:
        return None
    try:  # the count `ray.init` gives the Ray it starts (RAY_OVERRIDE_RESOURCES, else the accelerators it finds)
        from ray._private.resource_and_label_spec import ResourceAndLabelSpec

        overridden = ResourceAndLabelSpec._load_env_resources()
        if "GPU" in overridden:
            return float(overridden["GPU"])
        manager, count = ResourceAndLabelSpec._get_current_node_accelerator(None, {})
    except Exception:  # Ray's internals moved: the device is known once Ray is up instead
        return None
    return float(count) if manager is not None and manager.get_resource_name() == "GPU" else 0.0


def device_before_ray(device: str) -> tuple[bool | None, str]:
    """(on GPUs?, why) for `learner.workers.device`, as far as known before joining Ray (None: only the cluster can tell)."""
    if device != "auto":
        return device == "gpu", f"learner.workers.device={device}"
    import ray

    joined = ray.is_initialized()
    gpus = gpus_before_joining()
    if gpus is None:
        return None, ""
    return gpus > 0, f"learner.workers.device=auto and {'the Ray cluster' if joined else 'this machine, whose Ray the run starts,'} has no GPU"


def cpu_has_fp16() -> bool:
    """What DeepSpeed's CPU accelerator answers (`is_fp16_supported`): oneDNN's fp16 support on this CPU."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
    except (AttributeError, RuntimeError):
        return False


def cpu_problems(settings: LearnerSettings) -> list[str]:
    """The settings that cannot run on CPU workers, each with what to use instead."""
    train = settings.train
    problems = []
    if train.attention == "flash_attention_2":
        problems.append("learner.train.attention=flash_attention_2 (flash-attn's kernels need CUDA GPUs; use auto or sdpa)")
    if train.attention == "flex_attention":
        problems.append("learner.train.attention=flex_attention (PyTorch's FlexAttention has no backward on the CPU; use auto or sdpa)")
    if train.loss == "liger":
        problems.append("learner.train.loss=liger (Liger's kernels need GPUs; use auto or chunked)")
    if train.precision == "fp16" and not cpu_has_fp16():
        problems.append("learner.train.precision=fp16 (this CPU's oneDNN has no fp16, so DeepSpeed refuses it; use auto, fp32 or bf16)")
    return problems


def check_device(settings: LearnerSettings, on_gpu: bool, why_cpu: str) -> None:
    """Refuse, in one line, settings the workers cannot run on the device chosen; `why_cpu` says why it is the CPU."""
    problems = [] if on_gpu else cpu_problems(settings)
    if problems:
        raise ConfigError(f"the learner's workers train on the CPU ({why_cpu}), which cannot run {'; '.join(problems)}")
