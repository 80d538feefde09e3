"""DeepSpeed for one worker: the config made from the settings, the optimizer, the warmup + cosine schedule, the engine."""

from __future__ import annotations

import math
from typing import Any

from learner.settings import LearnerSettings


def deepspeed_config(settings: LearnerSettings, world_size: int, on_gpu: bool) -> dict[str, Any]:
    train, zero, optim = settings.train, settings.zero, settings.optim
    precision = train.precision if train.precision != "auto" else ("bf16" if on_gpu else "fp32")
    zero_section: dict[str, Any] = {"stage": zero.stage, "overlap_comm": on_gpu, "contiguous_gradients": True}
    if zero.stage == 3:
        zero_section.update(stage3_gather_16bit_weights_on_model_save=True, stage3_param_persistence_threshold=zero.param_persistence_threshold,
                            stage3_prefetch_bucket_size=50_000_000, reduce_bucket_size=50_000_000)
        if zero.offload_params:
            zero_section["offload_param"] = {"device": "cpu", "pin_memory": on_gpu}
    if zero.offload_optimizer:
        zero_section["offload_optimizer"] = {"device": "cpu", "pin_memory": on_gpu}
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": train.micro_batch_size,
        "gradient_accumulation_steps": train.gradient_accumulation_steps,
        "train_batch_size": train.micro_batch_size * train.gradient_accumulation_steps * world_size,
        "gradient_clipping": optim.grad_clip,
        "zero_optimization": zero_section,
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16", "initial_scale_power": 16},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
        # A client optimizer (torch AdamW on CPU) is allowed with ZeRO; DeepSpeed would otherwise insist on its own.
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": False,
    }
    if use_deepspeed_optimizer(settings, on_gpu):
        config["optimizer"] = {"type": "AdamW", "params": {"lr": optim.lr, "betas": list(optim.betas), "eps": optim.eps,
                                                           "weight_decay": optim.weight_decay}}
    return config


def use_deepspeed_optimizer(settings: LearnerSettings, on_gpu: bool) -> bool:
    """DeepSpeed's own Adam on GPUs and whenever the optimizer state is offloaded (its CPU Adam); torch's AdamW otherwise."""
    if settings.optim.implementation == "auto":
        return on_gpu or settings.zero.offload_optimizer
    return settings.optim.implementation == "deepspeed"


def lr_factor(step: int, *, warmup_steps: int, max_steps: int, min_ratio: float) -> float:
    """Multiplier of the peak learning rate for the update that follows `step` completed steps."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def initialize(model, settings: LearnerSettings, ds_config: dict[str, Any], on_gpu: bool):
    """(engine, scheduler): the DeepSpeed engine over the model, with the optimizer and the schedule attached."""
    import deepspeed
    import torch

    optim = settings.optim
    optimizer = None
    if not use_deepspeed_optimizer(settings, on_gpu):
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=optim.lr, betas=optim.betas,
                                      eps=optim.eps, weight_decay=optim.weight_decay)

    def factor(step: int) -> float:
        return lr_factor(step, warmup_steps=optim.warmup_steps, max_steps=settings.train.max_steps, min_ratio=optim.min_lr_ratio)

    def schedule(opt):
        return torch.optim.lr_scheduler.LambdaLR(opt, factor)

    engine, _, _, scheduler = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=schedule, config=ds_config,
                                                   model_parameters=None if optimizer is not None else [p for p in model.parameters() if p.requires_grad])
    return engine, scheduler
