"""What a request asks its answer to be, from the fields that can say it, as one `StructuredOutput`.

OpenAI's `response_format` (`json_object`, `json_schema`), vLLM's `structured_outputs` (`json`, `regex`, `choice`,
`json_object`) and vLLM's older `guided_json`, `guided_regex`, `guided_choice`, top level or in an SDK's `extra_body`, and
a `tool_choice` that forces calls ("required", a named function: `tool_calls.py`).
At most one constraint per request: a second is a 400 naming its field, as vLLM refuses more than one. Grammars
(`structured_outputs.grammar`, `guided_grammar`) are refused: vLLM reads one per its backend (xgrammar's EBNF,
guidance's Lark), so the same text would not be honoured alike by every engine here.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from actors.engines.types import StructuredOutput
from serve_apps.generate.openai_checks import invalid
from serve_apps.generate.tool_calls import ToolUse

GRAMMAR_REFUSAL = "grammars are not supported by this server (vLLM's differ by backend); use a regex, choices or a JSON schema"


def _response_format(value: Any) -> dict[str, Any] | None:
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"json_schema": {"type": "object"}}
    if kind == "json_schema":
        given = value.get("json_schema") if isinstance(value.get("json_schema"), dict) else {}
        if not isinstance(given.get("name"), str):  # required by OpenAI and by vLLM's JsonSchemaResponseFormat
            raise invalid("response_format.json_schema.name is required: a string naming the schema", "response_format")
        schema = given.get("schema")
        if not isinstance(schema, dict):
            raise invalid("response_format.json_schema.schema must be a JSON schema object", "response_format")
        return {"json_schema": schema}
    raise invalid('response_format.type must be "text", "json_object" or "json_schema"', "response_format")


def _schema(value: Any, name: str) -> dict[str, Any]:
    """A JSON schema given as an object, or as its JSON text (vLLM takes both)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise invalid(f'"{name}" must be a JSON schema: an object, or its JSON text', name) from None
    if not isinstance(value, dict):
        raise invalid(f'"{name}" must be a JSON schema: an object, or its JSON text', name)
    return value


REFERENCES = ("$ref", "$dynamicRef", "$recursiveRef")
DATA_KEYWORDS = ("const", "enum", "default", "examples")
SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas", "dependencies")


def _outside_reference(schema: dict[str, Any]) -> tuple[str, str] | None:
    """(where, the reference) of the first reference in `schema` to anything but one of its own parts (`#...`), or None.
    jsonschema, which checks answers against the schema, would fetch it (an http or file URL, or one relative to
    an `$id`). Iterative: a schema nested as deeply as JSON allows is walked without recursion."""
    pending: list[tuple[str, Any, bool]] = [("", schema, True)]  # (JSON pointer, value, whether a schema or a list of them)
    while pending:
        where, value, is_schema = pending.pop()
        if isinstance(value, list):
            pending.extend((f"{where}/{index}", item, is_schema) for index, item in enumerate(value))
        elif isinstance(value, dict) and not is_schema:  # a map of names to schemas: a name is no keyword
            pending.extend((f"{where}/{key}", item, True) for key, item in value.items())
        elif isinstance(value, dict):
            for key, item in value.items():
                if key in REFERENCES and isinstance(item, str) and not item.startswith("#"):
                    return f"{where}/{key}", item
                if key not in DATA_KEYWORDS:
                    pending.append((f"{where}/{key}", item, key not in SCHEMA_MAPS))
    return None


def _structured_outputs(value: Any) -> dict[str, Any]:
    name = "structured_outputs"
    if not isinstance(value, dict):
        raise invalid(f'"{name}" must be an object with one of "json", "regex", "choice"', name)
    given = {key: item for key, item in value.items() if item is not None}
    if "grammar" in given:
        raise invalid(f'"{name}.grammar": {GRAMMAR_REFUSAL}', name)
    if unknown := sorted(set(given) - {"json", "regex", "choice", "json_object"}):
        raise invalid(f'"{name}.{unknown[0]}" is not supported by this server; give one of "json", "regex", "choice"', name)
    if given.get("json_object") not in (None, True):
        raise invalid(f'"{name}.json_object" must be true when given', name)
    if len(given) != 1:
        raise invalid(f'"{name}" must hold exactly one of "json", "regex", "choice" (got {sorted(given) or "none"})', name)
    if "json" in given:
        return {"json_schema": _schema(given["json"], f"{name}.json")}
    if "json_object" in given:
        return {"json_schema": {"type": "object"}}
    return given


def _parts(body: dict[str, Any], use: ToolUse | None) -> list[tuple[str, dict[str, Any]]]:
    """Each field that asks for a constraint, named, with the StructuredOutput arguments it gives."""
    parts = []
    if body.get("response_format") is not None and (given := _response_format(body["response_format"])) is not None:
        parts.append(("response_format", given))
    if body.get("structured_outputs") is not None:
        parts.append(("structured_outputs", _structured_outputs(body["structured_outputs"])))
    if body.get("guided_grammar") is not None:
        raise invalid(f'"guided_grammar": {GRAMMAR_REFUSAL}', "guided_grammar")
    if body.get("guided_json") is not None:
        parts.append(("guided_json", {"json_schema": _schema(body["guided_json"], "guided_json")}))
    for name, key in (("guided_regex", "regex"), ("guided_choice", "choice")):
        if body.get(name) is not None:
            parts.append((name, {key: body[name]}))
    if use is not None and (schema := use.schema()) is not None:  # "required" or a named function
        parts.append(("tool_choice", {"json_schema": schema}))
    return parts


def structured_output(body: dict[str, Any], use: ToolUse | None = None) -> StructuredOutput | None:
    """The request's one structured output, or None; HTTPError 400 naming the field that is malformed, or the second
    one when more than one asks for a constraint. `use`: the request's tool use (`tool_calls.tool_use`), whose forced
    calls are a constraint too."""
    parts = _parts(body, use)
    if len(parts) > 1:
        raise invalid(f'"{parts[1][0]}" with "{parts[0][0]}": only one kind of structured output per request', parts[1][0])
    if not parts:
        return None
    name, given = parts[0]
    if "regex" in given and not isinstance(given["regex"], str):
        raise invalid(f'"{name}" must be a regular expression (a string)', name)
    if "choice" in given and (not isinstance(given["choice"], list) or not given["choice"]
                              or not all(isinstance(c, str) for c in given["choice"])):
        raise invalid(f'"{name}" must be a non-empty list of strings', name)
    if "json_schema" in given and (outside := _outside_reference(given["json_schema"])) is not None:
        raise invalid(f'"{name}": the schema\'s {outside[0].lstrip("/")} is {outside[1]!r}: only references inside the schema '
                      '("#/$defs/...") are followed; this server fetches no schema, put its definitions in "$defs"', name)
    try:
        return StructuredOutput(**given)
    except ValidationError as exc:
        reason = str(exc.errors(include_url=False)[0].get("msg")).removeprefix("Value error, ")
        raise invalid(f'"{name}": {reason}', name) from None
