"""The openai engine against requests that cannot be served and upstreams that answer badly: a bad request fails
before anything is sent, and an answer that is not a completion fails its request alone, naming the endpoint."""

from __future__ import annotations

import json

import httpx
import pytest
from pydantic import ValidationError

from actors.engines.openai_engine import OpenAIEngine
from actors.engines.types import GenerationRequest

CHAT = [{"role": "user", "content": "hi"}]


def engine_answering(answer, sent: list[dict]) -> OpenAIEngine:
    """An engine whose upstream records each body it is sent and answers `answer(body)` (an httpx.Response)."""
    def upstream(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return answer(sent[-1])
    return OpenAIEngine("http://upstream:8000/v1", "m", api_key_env=None, max_retries=0,
                        transport=httpx.MockTransport(upstream))


def test_empty_messages_are_refused_when_the_request_is_made():
    with pytest.raises(ValidationError, match="messages"):
        GenerationRequest(messages=[])
