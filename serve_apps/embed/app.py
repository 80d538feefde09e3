"""The embed application builder, named by `import_path` in configs/serve.yaml."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from serve_apps.embed.settings import EmbedSettings, load_settings
from serve_apps.scaling import replica_options


class EmbedDeployment:
    """The Serve replica: builds the service in the replica's process and forwards every request.

    The model loads in the background, so the service answers (503) while the application starts. A replica that joins
    running ones (an autoscaling step up, the restart of a failed replica, a redeploy) instead returns from its
    constructor only once its model has loaded: Serve routes to a replica from then on, and one that answers 503 at once
    would be its least busy replica, so it drew most requests while its peers could embed them."""

    def __init__(self, settings: EmbedSettings):
        from serve_apps.embed.service import EmbedService

        self.service = EmbedService(settings)
        if peers_running():
            self.service.loaded.wait()

    async def __call__(self, request):
        return await self.service(request)

    async def answer_body(self, body: bytes):
        """For the OpenAI front's `/v1/embeddings`: (status, JSON body, headers) of a request body."""
        return await self.service.answer_body(body)

    def status(self) -> dict[str, Any]:
        """For the fronts' `/v1/models`: whether the model is ready, or why it failed to load (`GET /v1/embed`'s body)."""
        return self.service.status()


def peers_running() -> bool:
    """Whether another replica of this replica's deployment is running (False outside a replica, or when Serve does not say)."""
    from ray import serve

    try:
        replica = serve.get_replica_context().replica_id
        application = serve.status().applications[replica.deployment_id.app_name]
        return application.deployments[replica.deployment_id.name].replica_states.get("RUNNING", 0) > 0
    except Exception:  # noqa: BLE001 - outside a replica (tests), or a controller that does not answer: load in the background
        return False


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
