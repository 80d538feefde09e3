"""One place that turns settings into an engine; vLLM is imported only when chosen."""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path

from actors.settings import ActorSettings
from trajforge.errors import ConfigError

log = logging.getLogger(__name__)

EXTRA_PACKAGES = {"vllm": "vllm"}
"""Engine -> the package it imports that only an extra installs (vllm: `.[gpu]`); the other engines need only the base install."""


def check_engine_installed(engine: str, joins_cluster: bool = False) -> None:
    """A ConfigError saying what to install when `engine` needs a package this Python lacks; the driver calls it before it
    starts any actor, so a missing extra is one line rather than every actor's traceback.

    It looks the package up without importing it (importing vLLM takes seconds and pulls in torch): a vLLM that is
    installed but broken (a CUDA mismatch) still fails in the actor, where `build_engine` reports it. A driver that
    joins a running cluster (`joins_cluster`) may sit on a head node without GPUs while its actors go to GPU nodes
    that have the extra: there a missing package is a warning naming what those nodes need, not a refusal."""
    package = EXTRA_PACKAGES.get(engine)
    if package is None or package in sys.modules or importlib.util.find_spec(package) is not None:
        return
    if joins_cluster:
        log.warning("this Python has no %s package; engine %s runs in the actors, so every node they are placed on needs "
                    "`pip install -e '.[gpu]'` (an actor on a node without it fails at start, saying so)", package, engine)
        return
    raise ConfigError(f"engine {engine} needs the gpu extra, and this Python has no {package} package: on a CUDA machine run "
                      f"`pip install -e '.[gpu]'`, or choose engine transformers or openai (--set actors.engine=transformers)")


def model_path(model: str) -> Path:
    from trajforge.small_model import DEFAULT_DIR, ensure_small_model

    return ensure_small_model(DEFAULT_DIR) if model == "small" else Path(model).expanduser()


def build_engine(settings: ActorSettings):
    if settings.engine == "openai":
        from actors.engines.openai_engine import OpenAIEngine

        if not settings.openai.base_url:
            raise ConfigError("actors.openai.base_url is required with engine openai (e.g. http://127.0.0.1:8000/generate)")
        return OpenAIEngine(settings.openai.base_url, settings.model, api_key_env=settings.openai.api_key_env,
                            concurrency=settings.openai.concurrency, timeout_s=settings.generation_timeout_s,
                            max_retries=settings.openai.max_retries, backoff_s=settings.openai.backoff_s,
                            token_ids_in_logprobs=settings.openai.token_ids_in_logprobs,
                            continue_final_message=settings.openai.continue_final_message)
    if settings.engine == "vllm":
        try:
            from actors.engines.vllm_engine import VllmEngine
        except ImportError as exc:
            raise ConfigError(f"engine vllm needs the gpu extra on a CUDA machine (`pip install -e '.[gpu]'`): {exc}") from None  # installed, not importable
        return VllmEngine(model_path(settings.model), settings.vllm)
    from actors.engines.transformers_engine import TransformersEngine

    return TransformersEngine(model_path(settings.model), device="cuda" if settings.num_gpus else "cpu")
