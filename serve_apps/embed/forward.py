"""OpenAI's `POST /v1/embeddings` for the applications that share a Serve instance with the embed app.

The ingest app (at `/`, so `OpenAI(base_url="http://host:8000/v1")` works) and the generate front
(`/generate/v1`) both answer it by calling the embed application's `answer_body` through a
deployment handle (Serve's model composition): one model, one batch queue, whichever URL a client uses.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.responses import Response

from serve_apps.http import HTTPError, json_response

CHECK_EVERY_S = 5.0
"""How long an answer about the embed application (deployed or not, its model's status) is reused."""
STATUS_TIMEOUT_S = 2.0
"""How long the embed replica has to say its model's status before it counts as unknown (a busy replica, not a broken one)."""


class EmbeddingsForwarder:
    def __init__(self, app_name: str | None, setting: str):
        self.app_name = app_name
        self.setting = setting  # named in the errors, e.g. "generate.embed_app"
        self._lock = asyncio.Lock()  # one look-up at a time; the requests that arrive meanwhile wait for its answer
        self._handle: Any = None
        self._app_status: str | None = None  # Serve's status of the application (RUNNING, DEPLOYING, ...); None: not deployed
        self._app_checked = -CHECK_EVERY_S
        self._model_failed: bool | None = None
        self._model_checked = -CHECK_EVERY_S

    async def __call__(self, body: bytes) -> Response:
        """The embed app's answer to a request body; HTTPError (its status and reason) when it refuses."""
        if not self.app_name:
            raise HTTPError(404, "not_found", f"embeddings are off here ({self.setting} is null)")
        handle = await self._application()
        if handle is None:
            raise HTTPError(404, "not_found", f"no Serve application {self.app_name!r} answers embeddings here: deploy the "
                                              f"embed application (configs/serve.yaml) or set {self.setting}")
        status, answer, headers = await handle.answer_body.remote(body)
        if status != 200:
            extra = {key: value for key, value in answer.items() if key not in ("error", "message")}  # `param`, for OpenAI's shape
            raise HTTPError(status, answer["error"], answer["message"], headers, **extra)
        return json_response(200, answer)

    async def spec_route(self, method: str, body: bytes) -> Response:
        """`/v1/embed` where it reached this application rather than the embed application's own route: Serve routes it
        here (the app at `/`) until the embed application runs, and this application's `/health` answers first. The
        specification's server answers 503 until its model has loaded, never 404, so: 503 with `Retry-After` while the
        embed application is not running, its own answer (POST: embeddings; GET, HEAD: its status) once it is."""
        if not self.app_name:
            raise HTTPError(404, "not_found", f"no route /v1/embed here ({self.setting} is null)")
        handle = await self._application()
        if handle is None or self._app_status != "RUNNING":
            state = "is still starting" if handle is not None else "is not deployed (yet)"
            raise HTTPError(503, "model_not_ready", f"the embed application {self.app_name!r} {state}; retry in a few seconds",
                            headers={"Retry-After": "5"})
        if method != "POST":
            return json_response(200, await handle.status.remote())
        status, answer, headers = await handle.answer_body.remote(body)
        return json_response(status, answer, headers)

    async def serves_embeddings(self) -> bool:
        """Whether `/v1/embeddings` answers here now (what `/v1/models` lists): the embed application is deployed and
        running, and its model has loaded or is loading, not failed. A replica too busy to say how its model is within
        STATUS_TIMEOUT_S keeps the last answer (at first: serving, since the application runs)."""
        if not self.app_name:
            return False
        handle = await self._application()
        if handle is None or self._app_status != "RUNNING":
            return False
        async with self._lock:
            now = time.monotonic()
            if now - self._model_checked >= CHECK_EVERY_S:
                self._model_checked = now
                model = await _model_status(handle)
                if model is not None:
                    self._model_failed = bool(model.get("error"))
        return not self._model_failed

    async def _application(self) -> Any:
        """The embed application's handle, or None where none is deployed. Serve's controller is asked (off the event
        loop) at most every CHECK_EVERY_S, so an application deployed or deleted later is seen within that."""
        from ray import serve
        from ray.serve.exceptions import RayServeException

        async with self._lock:
            now = time.monotonic()
            if now - self._app_checked >= CHECK_EVERY_S:
                self._app_checked = now
                overview = (await asyncio.to_thread(serve.status)).applications.get(self.app_name)
                self._app_status = None if overview is None else overview.status
                try:
                    if overview is None:
                        self._handle = None
                    elif self._handle is None:
                        self._handle = await asyncio.to_thread(serve.get_app_handle, self.app_name)
                except RayServeException:  # deleted between the two questions
                    self._handle, self._app_status = None, None
        return self._handle


async def _model_status(handle: Any) -> dict[str, Any] | None:
    """The embed replica's `status()` (`ready`, `error`), or None when it does not say within STATUS_TIMEOUT_S."""
    from ray.exceptions import RayError

    try:
        return await asyncio.wait_for(handle.status.remote(), STATUS_TIMEOUT_S)
    except (TimeoutError, RayError):
        return None
