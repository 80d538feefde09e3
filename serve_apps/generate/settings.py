"""Settings of the OpenAI-compatible generation front (`applications[name=generate].args`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from serve_apps.scaling import AutoscalingSetting
from trajforge.settings.serve_file import load_app_args

APP_NAME = "generate"


class GenerateSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: Literal["engine", "actors"] = "engine"
    """`actors`: route requests to the named GenerationActors (started with `start_actors(named=True)`),
    the same prompt prefix always to the same actor; `engine`: an engine inside this replica."""
    start_actors: bool = True
    """With backend `actors`: when no named GenerationActors are running, the front starts those of
    configs/actors.yaml (`TRAJFORGE__ACTORS__*` apply), detached, so other jobs find them too."""
    engine: Literal["transformers", "openai"] = "transformers"
    """With backend `engine`: a local Hugging Face model, or another OpenAI-compatible endpoint."""
    model: str = "small"
    """`small` (the embedded Qwen3-shaped model, created under models/ on first use) or a local model directory."""
    served_model_name: str | None = None
    """The name clients send as `model` (default: the model directory's name)."""
    upstream_url: str | None = None
    """For engine `openai`: the endpoint to forward to."""
    num_replicas: int = Field(default=1, ge=1)
    """Replicas when autoscaling is off."""
    autoscaling_config: AutoscalingSetting = None
    """Ray Serve autoscaling (min_replicas, max_replicas, target_ongoing_requests, ...); replaces num_replicas. With
    backend `engine` each replica loads the model; with `actors` replicas are thin and share the actors."""
    num_cpus: float = Field(default=1.0, ge=0)
    num_gpus: float = Field(default=0.0, ge=0)
    max_ongoing_requests: int = Field(default=64, ge=1)
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    max_tokens_limit: int = Field(default=4096, ge=1)
    """Largest `max_tokens` a request may ask for."""
    generation_timeout_s: float = Field(default=600.0, gt=0)
    """A streamed generation running longer is stopped and its stream ends with an error event."""
    max_choices: int = Field(default=16, ge=1)
    """Most choices one request may ask for (`n` times the number of prompts)."""
    reasoning_parser: Literal["qwen3"] | None = None
    """`qwen3`: a chat answer's `<think>...</think>` is given apart as the message's `reasoning` (vLLM's
    `--reasoning-parser qwen3`); null: the answer's text is its content, thinking included."""
    embed_app: str | None = "embed"
    """The Serve application that answers `/v1/embeddings` (null: the front answers 404 there)."""


def load_settings(args: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> GenerateSettings:
    return load_app_args(GenerateSettings, APP_NAME, args, environ)
