"""The HTTP floor: a bare Serve deployment that reads the body and answers a small JSON, nothing else."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response


class Echo:
    async def __call__(self, request: Request) -> Response:
        await request.body()
        return Response(b'{"accepted":true}', media_type="application/json")


def build(max_ongoing_requests: int):
    from ray import serve

    return serve.deployment(Echo, name="Echo", max_ongoing_requests=max_ongoing_requests, ray_actor_options={"num_cpus": 0.5}).bind()
