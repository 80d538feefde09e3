"""OpenAI's `POST /v1/embeddings` for the applications that share a Serve instance with the embed app.

The ingest app (at `/`, so `OpenAI(base_url="http://host:8000/v1")` works) and the generate front
(`/generate/v1`) both answer it by calling the embed application's `answer_body` through a
deployment handle (Serve's model composition): one model, one batch queue, whichever URL a client uses.
"""

from __future__ import annotations

from starlette.responses import Response

from serve_apps.http import HTTPError, json_response


class EmbeddingsForwarder:
    def __init__(self, app_name: str | None, setting: str):
        self.app_name = app_name
        self.setting = setting  # named in the errors, e.g. "generate.embed_app"
        self._handle = None

    async def __call__(self, body: bytes) -> Response:
        """The embed app's answer to a request body; HTTPError (its status and reason) when it refuses."""
        if not self.app_name:
            raise HTTPError(404, "not_found", f"embeddings are off here ({self.setting} is null)")
        if self._handle is None:
            from ray import serve
            from ray.serve.exceptions import RayServeException

            try:
                self._handle = serve.get_app_handle(self.app_name)
            except RayServeException:
                raise HTTPError(404, "not_found", f"no Serve application {self.app_name!r} answers embeddings here: deploy the "
                                                  f"embed application (configs/serve.yaml) or set {self.setting}") from None
        status, answer, headers = await self._handle.answer_body.remote(body)
        if status != 200:
            raise HTTPError(status, answer["error"], answer["message"], headers)
        return json_response(200, answer)
