"""The generation front's application builder (`serve_apps.generate.app:build_app`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from serve_apps.generate.settings import GenerateSettings, load_settings
from serve_apps.scaling import replica_options


class GenerateDeployment:
    def __init__(self, settings: GenerateSettings, actor_settings: Any = None):
        from serve_apps.generate.service import GenerateService

        self.service = GenerateService(settings, actor_settings=actor_settings)

    async def __call__(self, request):
        return await self.service(request)


def build(settings: GenerateSettings):
    from ray import serve

    if settings.backend == "engine" and settings.engine == "transformers":
        # Made here (the embedded default is created on first use) and pinned to an absolute path:
        # replicas do not share the driver's working directory.
        from actors.engines.factory import model_path

        settings = settings.model_copy(update={"model": str(model_path(settings.model).resolve())})
    actor_settings = _actor_settings() if settings.backend == "actors" and settings.start_actors else None

    options: dict[str, Any] = {"num_cpus": settings.num_cpus}
    if settings.num_gpus:
        options["num_gpus"] = settings.num_gpus
    deployment = serve.deployment(GenerateDeployment, name="GenerateService", max_ongoing_requests=settings.max_ongoing_requests,
                                  ray_actor_options=options, **replica_options(settings.num_replicas, settings.autoscaling_config))
    return deployment.bind(settings, actor_settings)


def _actor_settings():
    """configs/actors.yaml as the driver sees it, with its model made and its paths absolute for the actors."""
    from actors.settings import absolute_actor_settings, load_actor_settings

    return absolute_actor_settings(load_actor_settings())


def build_app(args: Mapping[str, Any]):
    return build(load_settings(args or {}))
