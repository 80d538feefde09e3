"""The Serve application builder: `serve run configs/serve.yaml` and `trajforge serve` both end here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from serve_apps.ingest.settings import IngestSettings, load_settings


class IngestDeployment:
    """The Serve replica: builds the service in the replica's process and forwards every request."""

    def __init__(self, settings: IngestSettings):
        from serve_apps.ingest.service import IngestService

        self.service = IngestService(settings)

    async def __call__(self, request):
        return await self.service(request)


def build(settings: IngestSettings):
    """The Serve Application for validated settings."""
    from ray import serve

    from serve_apps.ingest.events import api_keys

    # Replicas do not share the driver's working directory: pin the lake to an absolute path. Nor, on a cluster
    # started before this command, its environment: fold the keys of INGEST_API_KEYS (and TRAJFORGE_ADMIN_KEYS) set here
    # into the settings.
    events = settings.events.model_copy(update={"api_keys": api_keys(settings.events.api_keys, settings.events.api_keys_env)})
    provenance = settings.provenance.model_copy(
        update={"admin_keys": api_keys(settings.provenance.admin_keys, settings.provenance.admin_keys_env)})
    settings = settings.model_copy(update={"lake": settings.lake.expanduser().resolve(), "events": events, "provenance": provenance})
    deployment = serve.deployment(
        IngestDeployment,
        name="IngestService",
        num_replicas=settings.num_replicas,
        max_ongoing_requests=settings.max_ongoing_requests,
        ray_actor_options={"num_cpus": settings.num_cpus, **({"resources": settings.resources} if settings.resources else {})},
        health_check_period_s=10,
    )
    return deployment.bind(settings)


def build_app(args: Mapping[str, Any]):
    """Entry point named by `import_path` in configs/serve.yaml; applies TRAJFORGE__INGEST__* variables."""
    return build(load_settings(args or {}))
