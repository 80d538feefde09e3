"""`trajforge train --estimate`: will the configured model train on the learner GPUs? DeepSpeed's estimate, plus activations.

The model is instantiated on PyTorch's meta device (no memory, no weights) from its config.json, or
from a built-in shape (`qwen3-14b`, `qwen3-0.6b`) when no checkpoint is at hand. DeepSpeed's
`estimate_zero3_model_states_mem_needs_all_cold` (its ZeRO-2 one for `learner.zero.stage` 0 to 2) prints
its table of model states (parameters, gradients, optimizer) per offload option; we add the activations of one micro-batch with gradient
checkpointing (the layer inputs kept, one layer recomputed, one chunk of logits) and a verdict for
the configured option. Estimates, not measurements: leave a few GB of headroom for fragmentation,
communication buckets and the CUDA context.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from learner.settings import LearnerSettings
from trajforge.cluster import ClusterSettings
from trajforge.errors import ConfigError

# Public configs of the Qwen3 checkpoints (config.json on the model card), for estimates without the weights.
SHAPES = {
    "qwen3-14b": {"hidden_size": 5120, "intermediate_size": 17408, "num_hidden_layers": 40, "num_attention_heads": 40,
                  "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936, "tie_word_embeddings": False},
    "qwen3-0.6b": {"hidden_size": 1024, "intermediate_size": 3072, "num_hidden_layers": 28, "num_attention_heads": 16,
                   "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936, "tie_word_embeddings": True},
}
HUB_NAMES = {f"qwen/{shape}": shape for shape in SHAPES}  # the model cards' names, as a user without the weights writes them: Qwen/Qwen3-14B
GB = 2**30


@dataclass(frozen=True)
class Estimate:
    total_params: int
    largest_layer_params: int
    gpu_states_gb: float
    cpu_states_gb: float
    activations_gb: float

    @property
    def gpu_total_gb(self) -> float:
        return self.gpu_states_gb + self.activations_gb


def builtin_shape(name: str) -> str | None:
    """The built-in shape `name` stands for: a shape's name, or its model card's (`Qwen/Qwen3-14B`) when no such folder is here."""
    if name.lower() in SHAPES:
        return name.lower()
    return HUB_NAMES.get(name.lower()) if not Path(name).expanduser().exists() else None


def model_config(name: str, small_model_dir: Path):
    """The config of `name`: a built-in shape, the embedded small model (its default shape until it is made) or a local directory."""
    from transformers import AutoConfig, Qwen3Config

    shape = builtin_shape(name)
    if shape is not None:
        return Qwen3Config(**SHAPES[shape])
    directory = small_model_dir if name == "small" else Path(name)
    if (directory / "config.json").is_file():
        try:
            return AutoConfig.from_pretrained(directory)
        except (OSError, ValueError, KeyError) as exc:  # not JSON, or a model_type this transformers does not know
            raise ConfigError(f"learner.model: {directory / 'config.json'} cannot be read as a Hugging Face config: "
                              f"{str(exc).splitlines()[0]}") from None
    if name == "small":
        from trajforge.small_model import small_config

        return small_config()
    raise ConfigError(f"learner.model: {name} is not a model directory with a config.json; name a local Hugging Face "
                      f"checkpoint, `small`, or one of the built-in shapes {', '.join(SHAPES)} (also as Qwen/Qwen3-14B, Qwen/Qwen3-0.6B)")


def count_params(config) -> tuple[int, int]:
    """(total parameters, largest single module's own parameters), from a model built on the meta device."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except ValueError as exc:  # a config of a model type that has no causal LM (an image encoder, say)
        raise ConfigError(f"learner.model: a {config.model_type} model is not a causal LM: {str(exc).splitlines()[0]}") from None
    total = sum(parameter.numel() for parameter in model.parameters())
    largest = max(sum(parameter.numel() for parameter in module.parameters(recurse=False)) for module in model.modules())
    return total, largest


def estimate(settings: LearnerSettings, gpus: int, model_name: str | None = None, *, nodes: int = 1) -> Estimate:
    """Per GPU and per node (`cpu_states_gb`), with `gpus` GPUs on each of `nodes` nodes, for the configured ZeRO stage."""
    name = model_name or settings.model
    config = model_config(name, settings.small_model_dir)
    total, largest = count_params(config)
    zero = settings.zero
    if zero.stage == 3:
        from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

        cpu_bytes, gpu_bytes, _ = estimate_zero3_model_states_mem_needs(
            total, largest, num_gpus_per_node=gpus, num_nodes=nodes, cpu_offload=zero.offload_optimizer,
            cpu_offload_params=zero.offload_params, zero_init=True)
    else:
        from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

        cpu_bytes, gpu_bytes = estimate_zero2_model_states_mem_needs(total, *zero2_spread(zero.stage, gpus, nodes),
                                                                     cpu_offload=zero.offload_optimizer)
    batch, seq, hidden = settings.train.micro_batch_size, settings.data.seq_len, config.hidden_size
    bytes_per = 4 if settings.train.precision == "fp32" else 2
    kept = config.num_hidden_layers * batch * seq * hidden * bytes_per if settings.train.gradient_checkpointing else 0
    one_layer = 34 * batch * seq * hidden * bytes_per // 2  # Korthikanti et al.'s per-layer activations, without attention scores
    layers = one_layer if settings.train.gradient_checkpointing else one_layer * config.num_hidden_layers
    logits = 2 * min(settings.train.loss_chunk_tokens, batch * seq) * config.vocab_size * 4
    return Estimate(total, largest, gpu_bytes / GB, cpu_bytes / GB, (kept + layers + logits) / GB)


def zero2_spread(stage: int, gpus: int, nodes: int) -> tuple[int, int]:
    """(GPUs per node, nodes) for DeepSpeed's ZeRO-2 estimate, which stands for stages 1 and 2 (it has none for 1,
    whose whole gradients on every GPU make it a little low) and for stage 0 as a single GPU (nothing is partitioned)."""
    return (gpus, nodes) if stage else (1, 1)


def training_gpus(workers: int, nodes: int, gpus_per_node: int) -> tuple[int, int]:
    """(GPUs per node, nodes) the run trains on: one worker per GPU, `learner.workers.count` of them lowered to the
    learner's GPUs (as `learner.train.choose_workers` does), on as few learner nodes as hold them. A count that fills
    no whole number of nodes is estimated as one node holding them all: the per-GPU share is right, the host memory
    per node the most it could be. Without a GPU count in configs/cluster.yaml, `workers` GPUs on one node."""
    if not gpus_per_node:
        return workers, 1
    used = min(workers, nodes * gpus_per_node)
    if used <= gpus_per_node or used % gpus_per_node:
        return used, 1
    return gpus_per_node, used // gpus_per_node


def host_memory_use(settings: LearnerSettings) -> str:
    """What DeepSpeed's host memory figure is for: the offloaded states, or (nothing offloaded) loading the model."""
    offloaded = settings.zero.offload_optimizer or settings.zero.offload_params
    return "for the offloaded states" if offloaded else "to load the model (nothing is offloaded)"


def to_fit(settings: LearnerSettings, result: Estimate) -> list[str]:
    """Settings that lower the per-GPU figure, the likeliest first."""
    zero, hints = settings.zero, []
    if zero.stage < 3:
        hints.append("learner.zero.stage=3")
    if not zero.offload_optimizer:
        hints.append("learner.zero.offload_optimizer=true")
    elif zero.stage == 3 and not zero.offload_params:
        hints.append("learner.zero.offload_params=true")
    if result.activations_gb > 0.25 * result.gpu_total_gb:
        hints.append("a lower learner.data.seq_len or train.micro_batch_size" + ("" if settings.train.gradient_checkpointing else
                                                                                 ", train.gradient_checkpointing=true"))
    return hints


def count_text(count: int) -> str:
    """A parameter count as people write it: 14.77 B, 0.60 B, 3.1 M, 920 K."""
    if count >= 1e8:
        return f"{count / 1e9:.2f} B"
    return f"{count / 1e6:.1f} M" if count >= 1e6 else f"{count / 1e3:.0f} K"


def print_estimate(settings: LearnerSettings, cluster: ClusterSettings) -> Estimate:
    import os

    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # an estimate needs no GPU; say so before DeepSpeed guesses aloud
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs_all_cold

    learner = cluster.learner
    gpus, nodes = training_gpus(settings.workers.count, learner.nodes, learner.gpus_per_node)
    gpu = learner.gpu
    result = estimate(settings, gpus, nodes=nodes)
    shape = builtin_shape(settings.model)
    source = f" (built-in shape {shape}: the model card's config.json, no weights needed)" if shape else ""
    print(f"model {settings.model}{source}: {count_text(result.total_params)} parameters, largest layer {count_text(result.largest_layer_params)}")
    if learner.gpus_per_node and gpus * nodes != learner.nodes * learner.gpus_per_node:
        print(f"trained by {gpus * nodes} worker(s), one per GPU (learner.workers.count is {settings.workers.count}; configs/cluster.yaml "
              f"gives the learner {learner.nodes} x {learner.gpus_per_node} GPUs)")
    elif learner.gpus_per_node and settings.workers.count > gpus * nodes:  # capped: the run starts one worker per GPU
        print(f"trained by {gpus * nodes} worker(s), one per GPU: learner.workers.count is {settings.workers.count}, more than the "
              f"{learner.nodes} x {learner.gpus_per_node} GPUs configs/cluster.yaml gives the learner")
    if settings.zero.stage == 3:
        estimate_zero3_model_states_mem_needs_all_cold(result.total_params, result.largest_layer_params, num_gpus_per_node=gpus, num_nodes=nodes)
    else:
        from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs_all_cold

        print(f"(ZeRO stage {settings.zero.stage}: DeepSpeed's ZeRO-2 estimate{', as one GPU holding everything' if settings.zero.stage == 0 else ''})")
        spread_gpus, spread_nodes = zero2_spread(settings.zero.stage, gpus, nodes)
        estimate_zero2_model_states_mem_needs_all_cold(result.total_params, num_gpus_per_node=spread_gpus, num_nodes=spread_nodes)
    option = f"zero stage {settings.zero.stage}, offload_optimizer={settings.zero.offload_optimizer}, offload_params={settings.zero.offload_params}"
    print(f"\nconfigured ({option}; micro-batch {settings.train.micro_batch_size} x {settings.data.seq_len} tokens, "
          f"gradient checkpointing {settings.train.gradient_checkpointing}), per GPU:")
    print(f"  model states {result.gpu_states_gb:.1f} GB + activations {result.activations_gb:.1f} GB = {result.gpu_total_gb:.1f} GB; "
          f"host memory {result.cpu_states_gb:.0f} GB per learner node {host_memory_use(settings)}")
    if gpu is not None:
        fits = result.gpu_total_gb <= gpu.memory_gb * 0.9
        print(f"  {'fits' if fits else 'does NOT fit'} {gpus * nodes} x {gpu.name} ({gpu.memory_gb:g} GB each, 10% kept as headroom)"
              + ("" if fits or not to_fit(settings, result) else f"; to fit, try {', '.join(to_fit(settings, result))}"))
    host = learner.host_memory_gb
    if host is not None:
        print(f"  host memory: {'enough' if result.cpu_states_gb <= host * 0.9 else 'NOT enough'} ({host:g} GB on each learner node)")
    elif result.cpu_states_gb > 64:
        print("  set cluster.learner.host_memory_gb to check the learner node's RAM against this figure")
    return result
