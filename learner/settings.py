"""Settings of the learner, from `configs/learner.yaml` (`learner:`), `TRAJFORGE__LEARNER__...` and `--set learner.x=y`."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from trajforge.settings import load_section

DEFAULT_PATH = Path(__file__).resolve().parents[1] / "configs" / "learner.yaml"
SECTION = "learner"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BuildMix(_Strict):
    build: str = "latest"
    """`latest` (the whole lake's newest build), `latest:<org>` (the newest `--org` build), a build id of the lake, a
    path to a build folder, or the URI of a published build (`trajforge lake publish`): `s3://bucket/prefix/<build id>`,
    `s3://bucket/prefix/latest`, any pyarrow filesystem URI (S3 options in its query or from AWS_* variables)."""
    weight: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    """Share of the training stream's examples drawn from this build (weights are normalized over the list): a share of
    the examples, not of the tokens, so a build of longer examples gives more of the tokens than its weight says."""
    where: str | None = Field(default=None, min_length=1)
    """Only the sft rows this DuckDB SQL condition keeps, over the sft table's columns (trajforge/contracts/curated.py):
    `source = 'teacher'`, `tier = 'TIER_A'`, `reward.verified`, `provenance.outcome IS DISTINCT FROM 'rejected'` (drop the
    work its owners rejected), `provenance.agent_actions > 0`. Part of the cache's name: each condition caches its rows."""


class DataSettings(_Strict):
    lake: Path = Path("./lake")
    """The lake whose `curated/` holds the builds."""
    builds: list[BuildMix] = Field(default_factory=lambda: [BuildMix()], min_length=1)
    """The builds whose `sft` rows are trained on, mixed by weight."""
    seq_len: int = Field(default=4096, ge=16)
    """Length of a packed sequence; longer examples are cut to it (the end is dropped)."""
    window: int = Field(default=1024, ge=1)
    """Examples tokenized and packed together; packed sequences never span two windows."""
    seed: int = 0
    """Seed of the shuffle and of the mixture draws."""
    cache_dir: Path | None = None
    """Where the verified rows are cached as Arrow files (default: `<output_dir>/cache`)."""


class OptimSettings(_Strict):
    lr: float = Field(default=1e-5, gt=0)
    """Peak learning rate, reached after the warmup."""
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1)
    """The cosine decays to lr * min_lr_ratio at max_steps."""
    warmup_steps: int = Field(default=10, ge=0)
    """Linear warmup from 0 to lr over this many optimizer steps."""
    weight_decay: float = Field(default=0.0, ge=0)
    """Decoupled (AdamW) weight decay."""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW betas."""
    eps: float = Field(default=1e-8, gt=0)
    """AdamW epsilon."""
    grad_clip: float = Field(default=1.0, ge=0)
    """Clip the global gradient norm to this (0: no clipping)."""
    implementation: Literal["auto", "deepspeed", "torch"] = "auto"
    """`deepspeed`: DeepSpeed's fused (GPU) or CPU Adam (with offload); `torch`: torch.optim.AdamW; `auto`: deepspeed on GPUs, torch on CPU."""


class ZeroSettings(_Strict):
    stage: Literal[0, 1, 2, 3] = 3
    """DeepSpeed ZeRO stage; 3 partitions parameters, gradients and optimizer state across the workers."""
    offload_optimizer: bool = False
    """Keep optimizer state in CPU memory (DeepSpeed CPU Adam; stage 1 to 3): what makes a 14B model fit 2 x 32 GB."""
    offload_params: bool = False
    """Keep parameters in CPU memory too (stage 3 only; slower again)."""
    param_persistence_threshold: int = Field(default=10_000, ge=0)
    """Stage 3: parameters with fewer elements than this stay whole on every worker (never gathered); larger values
    trade memory for fewer gathers, which matters for small models on few GPUs."""

    @field_validator("offload_optimizer", "offload_params")
    @classmethod
    def _offload_needs_its_stage(cls, offload: bool, info: ValidationInfo) -> bool:
        # DeepSpeed ignores these at a lower stage without a word: the run would silently keep everything on the GPU.
        stage = info.data.get("stage", 3)
        if offload and info.field_name == "offload_params" and stage != 3:
            raise ValueError(f"needs zero.stage 3 (it is {stage}): only stage 3 partitions, and so can offload, the parameters")
        if offload and stage == 0:
            raise ValueError("needs zero.stage 1, 2 or 3 (it is 0): without ZeRO, DeepSpeed does not offload the optimizer state")
        return offload


class TrainSettings(_Strict):
    max_steps: int = Field(default=100, ge=1)
    """Optimizer steps of the run; the schedule ends here."""
    stop_after_steps: int | None = Field(default=None, ge=1)
    """Stop (checkpointed) after this step without changing the schedule: time-boxed runs and resume tests."""
    micro_batch_size: int = Field(default=1, ge=1)
    """Packed sequences per worker per forward pass."""
    gradient_accumulation_steps: int = Field(default=8, ge=1)
    """Micro-batches per optimizer step on each worker."""
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    """`auto`: bf16 on GPUs, fp32 on CPU; fp16 on CPU workers needs a CPU whose oneDNN has fp16 (DeepSpeed refuses it otherwise)."""
    gradient_checkpointing: bool = True
    """Recompute decoder layers' activations in the backward pass."""
    checkpoint_every_n_layers: int = Field(default=1, ge=1)
    """Checkpoint every n-th decoder layer only (1: all); larger keeps more activations and recomputes less."""
    attention: Literal["auto", "varlen", "sdpa", "flash_attention_2", "flex_attention", "eager"] = "auto"
    """Attention kernel, all keeping packed examples apart; `auto` on GPUs: flash_attention_2 when `flash_attn` is installed,
    else `varlen` (PyTorch's varlen flash kernel, learner/attention.py) when it passes its check at start, else sdpa (a dense
    block-diagonal mask, no flash kernel); `auto` on CPU: sdpa. flash_attention_2 and flex_attention need GPUs (refused for CPU
    workers)."""
    loss: Literal["auto", "liger", "chunked"] = "auto"
    """Linear cross-entropy without full logits: Liger's fused kernel (GPU, `.[gpu]`) or a chunked pure-torch one; `auto` picks liger when importable on GPUs."""
    loss_chunk_tokens: int = Field(default=2048, ge=1)
    """Tokens per chunk of the pure-torch loss (logits of at most this many tokens exist at once)."""
    liger_kernels: bool = True
    """On GPUs with liger_kernel installed, also swap in its RMSNorm, SwiGLU and RoPE kernels."""
    seed: int = 0
    """Seed of the model's random state (dropout, if the model has any)."""


class EvalSettings(_Strict):
    every_steps: int = Field(default=50, ge=0)
    """Evaluate the dev split every this many steps, and at the end (0: only at the end)."""
    max_sequences: int = Field(default=64, ge=1)
    """Packed dev sequences evaluated (the same ones every time)."""


class CheckpointSettings(_Strict):
    every_steps: int = Field(default=100, ge=0)
    """Save DeepSpeed's sharded checkpoint every this many steps, and at the end (0: only at the end)."""
    keep: int = Field(default=2, ge=1)
    """Checkpoints kept; older ones are deleted."""
    export_hf: bool = True
    """At the end, write a consolidated Hugging Face directory (`<run>/hf`: model and tokenizer)."""


class WorkerSettings(_Strict):
    count: int = Field(default=2, ge=1)
    """Ray Train workers (one per GPU)."""
    device: Literal["auto", "gpu", "cpu"] = "auto"
    """`auto`: GPUs when the Ray cluster has them, else CPU (DeepSpeed's CPU accelerator with gloo)."""
    cpus_per_worker: float | None = Field(default=None, gt=0)
    """Ray CPUs each worker asks for (tokenization runs in the worker); default 4 on GPUs, on CPU a share of the cluster's CPUs."""
    resources: dict[str, float] = Field(default_factory=dict)
    """Extra Ray resources per worker, added to the learner node's from configs/cluster.yaml."""
    start_timeout_s: float = Field(default=300.0, gt=0)
    """How long to wait for the workers' resources to be free before giving up with an error."""
    max_failures: int = Field(default=0, ge=0)
    """Ray Train restarts the workers this many times after a failure; each restart resumes from the last checkpoint."""


class LearnerSettings(_Strict):
    model: str = "small"
    """`small` (the embedded Qwen3-shaped model, made on first use) or a local Hugging Face causal LM directory, e.g. /models/Qwen3-14B."""
    small_model_dir: Path = Path("models/small-qwen3")
    """Where the embedded model lives; its tokenizer is trained on the first build's sft text when it is created."""
    output_dir: Path = Path("./runs")
    """Runs are written to `<output_dir>/<run_name>/`: checkpoints, metrics.jsonl, TensorBoard events, hf/."""
    run_name: str = Field(default="sft", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    """Name of the run; a second start with the same name resumes it."""
    resume: str = "auto"
    """`auto` (the run's latest checkpoint, if any), `never`, or the path of a checkpoint folder to start from; `never` and a
    folder replace the run's history after their step (its later checkpoints are removed, its metrics lines cut)."""
    log_every_steps: int = Field(default=1, ge=1)
    """Write a metrics line every this many steps."""
    peak_tflops: float | None = Field(default=None, gt=0)
    """Peak dense TFLOP/s of one worker's device for MFU; default from configs/cluster.yaml (the learner GPU, or the CPU figure)."""
    data: DataSettings = Field(default_factory=DataSettings)
    optim: OptimSettings = Field(default_factory=OptimSettings)
    zero: ZeroSettings = Field(default_factory=ZeroSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)
    eval: EvalSettings = Field(default_factory=EvalSettings)
    checkpoint: CheckpointSettings = Field(default_factory=CheckpointSettings)
    workers: WorkerSettings = Field(default_factory=WorkerSettings)

    @property
    def run_dir(self) -> Path:
        return self.output_dir / self.run_name

    def absolute(self) -> "LearnerSettings":
        """The same settings with every relative path resolved against this process's working directory."""
        data = self.data.model_copy(update={"lake": self.data.lake.resolve(),
                                            "cache_dir": (self.data.cache_dir or self.output_dir / "cache").resolve()})
        resume = self.resume if self.resume in ("auto", "never") else str(Path(self.resume).resolve())  # a checkpoint folder
        return self.model_copy(update={"small_model_dir": self.small_model_dir.resolve(), "output_dir": self.output_dir.resolve(), "data": data,
                                       "resume": resume})


def load_learner_settings(path: str | Path | None = None, assignments: Iterable[tuple[str, Any]] = ()) -> LearnerSettings:
    """File < TRAJFORGE__LEARNER__* environment < `assignments` (from `--set learner.x=y`)."""
    source = Path(path) if path else DEFAULT_PATH
    return load_section(LearnerSettings, source, SECTION, assignments)
