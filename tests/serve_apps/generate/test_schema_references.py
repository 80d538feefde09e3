"""A JSON schema in a request may reference only its own parts (`#/...`): the front fetches nothing a client names.

`jsonschema`, which checks each answer against the request's schema (`Completion.schema_valid`), still retrieves a
`$ref` to a URL (http, file) when validation reaches it, so a schema the engine passed on (an upstream, vLLM) made the
replica request any address the client chose, inside the cluster too."""

from __future__ import annotations

import pytest

from serve_apps.generate.structured_output import structured_output
from serve_apps.http import HTTPError

REMOTE = "http://127.0.0.1:18250/schema.json"


def _json_schema(schema: dict) -> dict:
    return {"response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}}


@pytest.mark.parametrize("body,param", [
    (_json_schema({"$ref": REMOTE}), "response_format"),
    (_json_schema({"type": "object", "properties": {"a": {"anyOf": [{"type": "integer"}, {"$ref": "file:///etc/passwd"}]}}}), "response_format"),
    (_json_schema({"$id": "http://127.0.0.1:18250/", "type": "object", "dependentSchemas": {"a": {"$ref": "other.json"}}}), "response_format"),
    ({"guided_json": '{"type": "array", "items": {"$dynamicRef": "http://127.0.0.1:18250/x"}}'}, "guided_json"),
    ({"structured_outputs": {"json": {"$defs": {"x": {"$ref": REMOTE}}, "$ref": "#/$defs/x"}}}, "structured_outputs"),
])
def test_a_schema_referencing_anything_outside_itself_is_a_400_naming_the_field(body, param):
    with pytest.raises(HTTPError) as refused:
        structured_output(body)
    assert refused.value.status == 400 and refused.value.body.get("param") == param, refused.value
    assert "only references inside the schema" in str(refused.value)


def test_references_inside_the_schema_are_taken():
    schema = {"$defs": {"point": {"type": "object", "properties": {"x": {"type": "integer"}}}},
              "type": "array", "items": {"$ref": "#/$defs/point"}, "properties": {"$ref": {"type": "string"}},
              "default": [{"$ref": REMOTE}]}  # a property named $ref, and data that looks like a reference
    structured = structured_output(_json_schema(schema))
    assert structured.json_schema == schema and structured.holds('[{"x": 1}]') and not structured.holds('[{"x": "a"}]')
