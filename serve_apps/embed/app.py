"""The embed application builder, named by `import_path` in configs/serve.yaml."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from serve_apps.embed.settings import EmbedSettings, load_settings
from serve_apps.scaling import replica_options


class EmbedDeployment:
    """The Serve replica: builds the service in the replica's process and forwards every request."""

    def __init__(self, settings: EmbedSettings):
        from serve_apps.embed.service import EmbedService

        self.service = EmbedService(settings)

    async def __call__(self, request):
        return await self.service(request)

    async def answer_body(self, body: bytes):
        """For the OpenAI front's `/v1/embeddings`: (status, JSON body, headers) of a request body."""
        return await self.service.answer_body(body)

    def status(self) -> dict[str, Any]:
        """For the fronts' `/v1/models`: whether the model is ready, or why it failed to load (`GET /v1/embed`'s body)."""
        return self.service.status()


def build(settings: EmbedSettings):
    from ray import serve

    options: dict[str, Any] = {"num_cpus": settings.num_cpus}
    if settings.num_gpus:
        options["num_gpus"] = settings.num_gpus
    deployment = serve.deployment(
        EmbedDeployment, name="EmbedService", max_ongoing_requests=settings.max_ongoing_requests, ray_actor_options=options,
        **replica_options(settings.num_replicas, settings.autoscaling_config),
    )
    return deployment.bind(settings)


def build_app(args: Mapping[str, Any]):
    """Entry point named by `import_path`; applies TRAJFORGE__EMBED__* variables."""
    return build(load_settings(args or {}))
