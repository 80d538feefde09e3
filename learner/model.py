"""The model a worker trains: a Hugging Face causal LM loaded partitioned (ZeRO-3), wrapped to return the summed loss.

`SFTModel.forward` runs the decoder to its last hidden states and hands them, with the output
embedding's weight, to `learner.loss`; the `lm_head` module itself never runs, so under ZeRO-3 its
weight is registered as an external parameter of the wrapper (gathered for the wrapper's forward and
backward). Also: which attention kernel and loss to use on this device, and the model's FLOPs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from learner.attention import decoder_kwargs
from learner.loss import liger_available, summed_loss
from learner.settings import TrainSettings

log = logging.getLogger(__name__)


def pick_attention(setting: str, on_gpu: bool) -> str:
    """The `attn_implementation` to load the model with; `varlen` is learner.attention's, registered here."""
    from learner import attention

    if setting == "auto" and on_gpu:
        try:
            import flash_attn  # noqa: F401

            return "flash_attention_2"
        except ImportError:
            setting = "varlen" if attention.kernel_works(f"cuda:{torch.cuda.current_device()}") else "sdpa"
    if setting == "varlen":
        attention.register()
        return attention.NAME
    return "sdpa" if setting == "auto" else setting


def pick_loss(setting: str, on_gpu: bool) -> str:
    if setting == "liger" and not liger_available():
        from trajforge.errors import ConfigError

        raise ConfigError("learner.train.loss: liger needs liger_kernel (pip install -e '.[gpu]'); use `auto` or `chunked`")
    if setting == "auto":
        return "liger" if on_gpu and liger_available() else "chunked"
    return setting


def torch_dtype(precision: str, on_gpu: bool) -> torch.dtype:
    if precision == "auto":
        precision = "bf16" if on_gpu else "fp32"
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]


class SFTModel(torch.nn.Module):
    def __init__(self, causal_lm, loss: str, chunk_tokens: int):
        super().__init__()
        self.causal_lm = causal_lm
        self.loss, self.chunk_tokens = loss, chunk_tokens

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        decoder = getattr(self.causal_lm, self.causal_lm.base_model_prefix)
        segments = decoder_kwargs(self.causal_lm.config._attn_implementation, position_ids)
        hidden = decoder(input_ids=input_ids, position_ids=position_ids, use_cache=False, **segments).last_hidden_state
        weight = self.causal_lm.get_output_embeddings().weight
        return summed_loss(hidden, weight, targets, implementation=self.loss, chunk=self.chunk_tokens)


def enable_checkpointing(causal_lm, every_n_layers: int) -> None:
    """Recompute decoder layers in the backward pass (non-reentrant, which ZeRO-3's gathered parameters need)."""
    if hasattr(causal_lm, "activation_checkpointing_enable"):
        causal_lm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False}, every_n_layers=every_n_layers)
    else:  # transformers before activation_checkpointing_enable: every layer
        causal_lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


@dataclass(frozen=True)
class ModelShape:
    """What the FLOPs count needs: parameters that do matmuls per token, and the attention's size."""

    matmul_params: int
    layers: int
    attention_width: int

    def flops(self, tokens: int, squared_lengths: int) -> float:
        """Training FLOPs (forward and backward, no recomputation) of some tokens whose examples have these lengths.

        6 per matmul parameter per token, plus causal attention's QK^T and AV: 6 * layers * width * n^2 / 2
        for forward and backward of an example of n tokens, times 2 for the two products.
        """
        return 6.0 * self.matmul_params * tokens + 6.0 * self.layers * self.attention_width * squared_lengths


def model_shape(causal_lm) -> ModelShape:
    config = causal_lm.config
    total = sum(getattr(p, "ds_numel", p.numel()) for p in causal_lm.parameters())
    embeddings = causal_lm.get_input_embeddings().weight
    tied = embeddings is causal_lm.get_output_embeddings().weight
    matmul = total if tied else total - getattr(embeddings, "ds_numel", embeddings.numel())
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return ModelShape(matmul, config.num_hidden_layers, config.num_attention_heads * head_dim)


def load_model(model_dir: Path, settings: TrainSettings, ds_config: dict, on_gpu: bool) -> tuple[SFTModel, ModelShape]:
    """The causal LM from disk, partitioned across the workers as it loads when ZeRO stage is 3."""
    from transformers import AutoModelForCausalLM

    dtype = torch_dtype(settings.precision, on_gpu)
    attention = pick_attention(settings.attention, on_gpu)
    keep_alive = None
    if ds_config["zero_optimization"]["stage"] == 3:
        from transformers.integrations import HfDeepSpeedConfig

        keep_alive = HfDeepSpeedConfig(ds_config)  # from_pretrained partitions while loading while this object lives
    torch.manual_seed(settings.seed)
    causal_lm = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype, attn_implementation=attention)
    # from_pretrained returns the model in eval mode, where Hugging Face skips gradient checkpointing (and dropout):
    # without this, they would start only when the first evaluation switches the engine back to training.
    causal_lm.train()
    if settings.gradient_checkpointing:
        enable_checkpointing(causal_lm, settings.checkpoint_every_n_layers)
    loss = pick_loss(settings.loss, on_gpu)
    if on_gpu and settings.liger_kernels and liger_available():
        from liger_kernel.transformers.monkey_patch import _apply_liger_kernel_to_instance

        _apply_liger_kernel_to_instance(model=causal_lm, cross_entropy=False, fused_linear_cross_entropy=False)
    wrapper = SFTModel(causal_lm, loss, settings.loss_chunk_tokens)
    wrapper.hf_deepspeed_config = keep_alive  # transformers reads ZeRO-3's state through this object while it lives
    if ds_config["zero_optimization"]["stage"] == 3:
        import deepspeed

        deepspeed.zero.register_external_parameter(wrapper, causal_lm.get_output_embeddings().weight)
    log.info("model %s: %s, attention %s, loss %s", model_dir, dtype, attention, loss)
    return wrapper, model_shape(causal_lm)
