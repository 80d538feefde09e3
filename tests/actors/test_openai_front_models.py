"""`GET /v1/models` lists the embedding model only where `/v1/embeddings` answers: the embed application is deployed
and its model did not fail to load (the front built here, on the session's Serve, with its embed apps)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from trajforge.constants import EMBEDDING_MODEL_NAME


def get(service, path: str) -> tuple[int, dict]:
    from starlette.requests import Request

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": "GET", "path": "/generate" + path, "root_path": "/generate", "headers": [], "query_string": b""}
    response = asyncio.run(service(Request(scope, receive)))
    return response.status_code, json.loads(response.body)


@pytest.fixture(scope="module")
def broken_embed_failed(http):
    deadline = time.monotonic() + 60
    while not http.get("/broken-embed").json()["error"] and time.monotonic() < deadline:
        time.sleep(0.5)


@pytest.mark.parametrize("embed_app,listed", [("embed", True), ("broken-embed", False), ("no-such-app", False), (None, False)])
def test_the_embedding_model_is_listed_where_embeddings_answer(engine, serve_url, broken_embed_failed, embed_app, listed):
    from serve_apps.generate.service import GenerateService
    from serve_apps.generate.settings import GenerateSettings

    service = GenerateService(GenerateSettings(served_model_name="small", embed_app=embed_app), engine=engine)
    status, models = get(service, "/v1/models")
    assert status == 200 and models["object"] == "list"
    assert [card["id"] for card in models["data"]] == ["small"] + ([EMBEDDING_MODEL_NAME] if listed else [])
    assert all(set(card) == {"id", "object", "created", "owned_by"} and card["object"] == "model" for card in models["data"])
    status, card = get(service, f"/v1/models/{EMBEDDING_MODEL_NAME}")
    assert status == (200 if listed else 404)
