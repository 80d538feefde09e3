"""The generate front's request checks against OpenAI's (and vLLM's) contract, without a model: pure parsing."""

from __future__ import annotations

import pytest

from serve_apps.generate import responses_api
from serve_apps.generate.structured_output import structured_output
from serve_apps.http import HTTPError

SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}}


@pytest.mark.parametrize("json_schema", [{"schema": SCHEMA}, {"name": None, "schema": SCHEMA}, {"name": 3, "schema": SCHEMA}])
def test_a_json_schema_response_format_without_its_name_is_a_400(json_schema):
    # OpenAI: "Missing required parameter: 'response_format.json_schema.name'"; vLLM's JsonSchemaResponseFormat requires it too
    with pytest.raises(HTTPError) as caught:
        structured_output({"response_format": {"type": "json_schema", "json_schema": json_schema}})
    assert caught.value.status == 400 and caught.value.body["param"] == "response_format"
    assert "json_schema.name" in caught.value.body["message"]


def test_a_named_json_schema_response_format_is_its_schema():
    named = structured_output({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA}}})
    assert named is not None and named.json_schema == SCHEMA


def test_a_responses_json_schema_text_format_without_its_name_is_a_400():
    body = {"input": "hi", "text": {"format": {"type": "json_schema", "schema": SCHEMA}}}
    with pytest.raises(HTTPError) as caught:
        responses_api.parse(body, model_name="m", max_tokens_limit=16, reasoning_parser=None)
    assert caught.value.status == 400 and caught.value.body["param"] == "text" and "text.format.name" in caught.value.body["message"]
