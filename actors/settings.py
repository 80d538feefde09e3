"""Settings of the generation actors, from `configs/actors.yaml` (`actors:`), env and `--set` overrides."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sandbox.settings import SandboxSettings
from trajforge.settings import load_section

DEFAULT_PATH = Path(__file__).resolve().parents[1] / "configs" / "actors.yaml"
SECTION = "actors"


class VllmSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    quantization: str | None = None
    """None: what the checkpoint's config says (a Qwen3-14B-AWQ or GPTQ directory is detected as such); or a method of
    the installed vLLM, e.g. `fp8` (quantized at load) or `bitsandbytes` (vLLM releases that still have it)."""
    gpu_memory_utilization: float = Field(default=0.85, gt=0, le=1)
    max_model_len: int = Field(default=8192, ge=256)
    enable_prefix_caching: bool = True


class OpenAISettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_url: str | None = None
    api_key_env: str | None = "OPENAI_API_KEY"
    concurrency: int = Field(default=8, ge=1)
    max_retries: int = Field(default=4, ge=0)
    """Retries of a request that met a connection error, a timeout, 429 or 5xx, with exponential backoff and jitter
    from `backoff_s` (a `Retry-After` header is honoured); other 4xx fail at once."""
    backoff_s: float = Field(default=0.5, ge=0)
    token_ids_in_logprobs: bool = True
    """Ask for the sampled token ids (`return_tokens_as_token_ids`, which vLLM's server and this project's front
    take), so completions keep exactly what was sampled; false for an upstream that refuses unknown fields."""
    continue_final_message: bool = True
    """Continue a started assistant answer (vLLM's `continue_final_message`, which this project's front takes too),
    as the loop's second generation does; false for an upstream without it (it then answers in a new turn)."""


class LoopSettings(BaseModel):
    """The actor loop's sampling and limits (actors/loop.py: LoopOptions)."""

    model_config = ConfigDict(extra="forbid")

    max_steps: int = Field(default=3, ge=1)
    max_tokens: int = Field(default=512, ge=1)
    state_max_tokens: int = Field(default=256, ge=1)
    state_token_budget: int = Field(default=1024, ge=16)
    """Tokens the `<state>` block may take in a prompt, counted with the engine's tokenizer; a state over it is
    summarized (`summarize_history`) before it is shown, and the summary is what is saved."""
    temperature: float = Field(default=0.7, ge=0)
    top_p: float = Field(default=1.0, gt=0, le=1)
    seed: int = 0
    sandbox_timeout_s: float = Field(default=90.0, gt=0)
    task_timeout_s: float = Field(default=900.0, gt=0)
    """A task still running after this is cancelled and reported as timed out."""


class ActorSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    engine: Literal["vllm", "transformers", "openai"] = "transformers"
    model: str = "small"
    """`small` (the embedded model) or a local model directory; for `openai`, the served model name."""
    count: int = Field(default=1, ge=1)
    num_gpus: float = Field(default=0.0, ge=0)
    num_cpus: float = Field(default=1.0, ge=0)
    resources: dict[str, float] = Field(default_factory=dict)
    max_restarts: int = Field(default=3, ge=0)
    max_task_retries: int = Field(default=2, ge=0)
    generation_timeout_s: float = Field(default=120.0, gt=0)
    sandbox_workers: int = Field(default=2, ge=1)
    health_interval_s: float = Field(default=15.0, gt=0)
    lake: Path = Path("./lake")
    """Step records go to <lake>/raw/trajectories/, task states to <lake>/state/states.db."""
    prompts: Path | None = None
    """Prompt templates (default configs/prompts.yaml)."""
    sandbox: SandboxSettings | None = None
    """The actors' jail policy, filled in the driver by `absolute_actor_settings` from configs/sandbox.yaml (and `--set
    sandbox.*`) with the jails' folders absolute; null: configs/sandbox.yaml as each actor loads it. Not for the config
    file: set the sandbox's own settings instead."""
    loop: LoopSettings = Field(default_factory=LoopSettings)
    vllm: VllmSettings = Field(default_factory=VllmSettings)
    openai: OpenAISettings = Field(default_factory=OpenAISettings)

    @model_validator(mode="after")
    def _vllm_has_a_gpu(self) -> ActorSettings:
        # Ray sets CUDA_VISIBLE_DEVICES only for the GPUs it reserved: without one, every vLLM actor would take GPU 0
        if self.engine == "vllm" and self.num_gpus == 0:
            raise ValueError("engine vllm needs a GPU per actor: set num_gpus 1 (or a fraction, with vllm.gpu_memory_utilization "
                             "lowered to match, to share one)")
        return self

    @property
    def state_db(self) -> Path:
        """The task states' SQLite database, <lake>/state/states.db."""
        return self.lake / "state" / "states.db"


def load_actor_settings(path: str | Path | None = None, assignments: Iterable[tuple[str, Any]] = ()) -> ActorSettings:
    """File < TRAJFORGE__ACTORS__* environment < `assignments` (from `--set actors.x=y`)."""
    source = Path(path) if path else DEFAULT_PATH
    return load_section(ActorSettings, source, SECTION, assignments)


def absolute_actor_settings(settings: ActorSettings, make_model: bool = True,
                            sandbox_assignments: Iterable[tuple[str, Any]] = ()) -> ActorSettings:
    """The settings as the generation actors must get them from the driver: they run in a folder of their own (the one
    `ray start` ran in, on a cluster), so the lake, a relative model folder and the prompts file are made absolute here
    (`with_absolute_paths`; in a submitted job the data paths against the project checkout), the embedded `small`
    model is made here (under models/ where relative paths resolve; not yet without `make_model`) and named by its
    path, and the jails' policy is loaded here, its folders absolute."""
    from sandbox.settings import absolute_sandbox_settings
    from trajforge.settings.job_paths import absolute_config_file, names_local_folder, with_absolute_paths

    example = "--lake /shared/lake --set actors.model=/models/Qwen3-14B-AWQ"
    local_model = settings.engine != "openai" and names_local_folder(settings.model)
    settings = with_absolute_paths(settings, SECTION, ("lake", "model") if local_model else ("lake",), example)
    update: dict[str, Any] = {"prompts": absolute_config_file(settings.prompts), "sandbox": absolute_sandbox_settings(settings.sandbox, sandbox_assignments)}
    if make_model and settings.engine != "openai" and settings.model == "small":
        update["model"] = str(_small_model(example))
    return settings.model_copy(update=update)


def _small_model(example: str) -> Path:
    """The embedded model's folder where relative paths resolve (made there on first use)."""
    from trajforge.settings.job_paths import absolute_data_paths
    from trajforge.small_model import DEFAULT_DIR, ensure_small_model

    ((_, folder),) = absolute_data_paths({"actors.model": DEFAULT_DIR}, example)
    return ensure_small_model(folder)
