"""The job's settings: `configs/synth_records.yaml` (section `synth_records:`), `TRAJFORGE__SYNTH_RECORDS__*`
variables, then `--set synth_records.x=v` (the project's one way: trajforge.settings.load_section)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from actors.settings import ActorSettings, OpenAISettings
from pipelines.synth_records.constants import DEFAULT_MAX_RECORDS_PER_JOB, DEFAULT_RETRY_ON_FAILURE, DEFAULT_UPDATE_EVERY_K
from trajforge.settings import load_section

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "configs" / "synth_records.yaml"
SECTION = "synth_records"
EXAMPLE = "--lake /shared/lake --set synth_records.model=/models/Qwen3-14B-AWQ"


class SynthRecordsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lake: Path = Path("./lake")
    """Jobs go to <lake>/synth_records/jobs/<id>/."""
    engine: Literal["transformers", "openai"] = "transformers"
    model: str = "small"
    """`small` (the embedded model) or a local model folder; for `openai`, the served model name."""
    openai: OpenAISettings = Field(default_factory=OpenAISettings)
    """The OpenAI-compatible endpoint (a vLLM server, a hosted API, this project's generate front)."""
    generation_timeout_s: float = Field(default=120.0, gt=0)
    max_records_per_job: int = Field(default=DEFAULT_MAX_RECORDS_PER_JOB, ge=1)
    update_every_k: int = Field(default=DEFAULT_UPDATE_EVERY_K, ge=1)
    """A peer writes its progress (its state file) every K records, and at its start and end."""
    retry_inference_on_failure: bool = DEFAULT_RETRY_ON_FAILURE
    peers: int = Field(default=2, ge=1)
    """Ray actors, each generating only its range of the records."""
    peer_cpus: float = Field(default=1.0, ge=0)
    peer_gpus: float = Field(default=0.0, ge=0)
    max_tokens: int = Field(default=512, ge=1, le=32768)
    schema_max_tokens: int = Field(default=1024, ge=1, le=32768)
    temperature: float = Field(default=0.7, ge=0, le=2)
    seed: int | None = 0
    """Record i's call samples with seed + i (its retry with seed + i + total); null: unseeded."""
    max_prompt_chars: int = Field(default=8000, ge=1)
    """The seed's guardrail: description and instructions are non-empty and at most this long together."""
    lock_wait_s: float = Field(default=60.0, ge=0)
    """How long a peer waits for the results file a killed run's worker may still hold."""

    @model_validator(mode="after")
    def _openai_has_an_endpoint(self) -> SynthRecordsSettings:
        if self.engine == "openai" and not self.openai.base_url:
            raise ValueError("engine openai needs openai.base_url (e.g. http://127.0.0.1:8000/generate, this project's front)")
        return self

    def actor_settings(self) -> ActorSettings:
        """The generation actors' settings that `actors.engines.factory.build_engine` takes."""
        return ActorSettings(engine=self.engine, model=self.model, openai=self.openai, num_gpus=self.peer_gpus,
                             generation_timeout_s=self.generation_timeout_s)


def load_synth_settings(path: str | Path | None = None, assignments: Iterable[tuple[str, Any]] = ()) -> SynthRecordsSettings:
    """File < TRAJFORGE__SYNTH_RECORDS__* environment < `assignments`; a bad value is a ConfigError naming the field."""
    return load_section(SynthRecordsSettings, Path(path) if path else DEFAULT_PATH, SECTION, assignments)


def absolute_settings(settings: SynthRecordsSettings, make_model: bool = True) -> SynthRecordsSettings:
    """As the peers need them, wherever Ray places them: the lake and a local model folder absolute, the embedded
    `small` model made (under models/ where relative paths resolve; not without `make_model`, for the commands that
    only read jobs) and named by its path."""
    from trajforge.settings.job_paths import absolute_data_paths, names_local_folder
    from trajforge.small_model import DEFAULT_DIR, ensure_small_model

    paths: dict[str, Any] = {"lake": settings.lake}
    if settings.engine == "transformers" and make_model:
        paths["model"] = DEFAULT_DIR if settings.model == "small" else settings.model if names_local_folder(settings.model) else None
    update = dict(absolute_data_paths(paths, EXAMPLE))
    if settings.engine == "transformers" and settings.model == "small" and make_model:
        update["model"] = str(ensure_small_model(update.get("model", DEFAULT_DIR)))
    return settings.model_copy(update={key: Path(value) if key == "lake" else value for key, value in update.items()})
