"""A job's schema (seed 001, section 6): drafts sanitized of the obvious mistakes (a wrong `$schema` URL, property
values that are not schema objects), then validated against the JSON Schema 2020-12 meta-schema; a schema that is
not valid there, or does not describe a JSON object, is refused with the reason. Records are validated against it."""

from __future__ import annotations

import copy
import json
from typing import Any

from pipelines.synth_records.constants import SCHEMA_DIALECT
from trajforge.errors import TrajforgeError

TYPE_NAMES = frozenset({"string", "number", "integer", "boolean", "object", "array", "null"})
SUBSCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")


class SchemaRefused(TrajforgeError, ValueError):
    """The schema cannot be a job's: the message says why and where."""


def sanitize_schema(draft: Any) -> tuple[dict[str, Any], list[str]]:
    """A copy of `draft` with the obvious mistakes corrected, and a line for each correction: `$schema` set to the
    2020-12 dialect, a top level with `properties` but no `type` made an object, and each property value that is not
    a schema object made one (a type name or a list of them becomes `{"type": ...}`, other text a string's
    description, anything else an unconstrained `{}`). Boolean schemas are valid in 2020-12 and stay."""
    if isinstance(draft, str):
        try:
            draft = json.loads(draft)
        except ValueError as exc:
            raise SchemaRefused(f"the schema is not JSON: {exc}") from None
    if not isinstance(draft, dict):
        raise SchemaRefused(f"the schema must be a JSON object, got {type(draft).__name__}")
    schema, fixes = copy.deepcopy(draft), []
    if schema.get("$schema") != SCHEMA_DIALECT:
        fixes.append(f"$schema {schema['$schema']!r} -> {SCHEMA_DIALECT}" if "$schema" in schema else f"$schema set to {SCHEMA_DIALECT}")
        schema["$schema"] = SCHEMA_DIALECT
    if "type" not in schema and isinstance(schema.get("properties"), dict):
        schema["type"] = "object"
        fixes.append("type: object added at the top level")
    _fix_subschemas(schema, "", fixes)
    return schema, fixes


def _fix_subschemas(node: Any, where: str, fixes: list[str]) -> None:
    if not isinstance(node, dict):
        return
    for key in SUBSCHEMA_MAPS:
        children = node.get(key)
        if not isinstance(children, dict):
            continue
        for name, value in list(children.items()):
            path = f"{where}/{key}/{name}"
            if not isinstance(value, (dict, bool)):
                children[name] = fixed = _as_schema(value)
                fixes.append(f"{path}: {value!r} -> {json.dumps(fixed)}")
            _fix_subschemas(children[name], path, fixes)
    items = node.get("items")
    if isinstance(items, (str, list)) and (fixed := _as_schema(items)).get("type"):  # `"items": "string"`
        fixes.append(f"{where}/items: {node['items']!r} -> {json.dumps(fixed)}")
        node["items"] = fixed
    for key in ("items", "additionalProperties", "not", "if", "then", "else", "contains", "propertyNames"):
        _fix_subschemas(node.get(key), f"{where}/{key}", fixes)
    for key in ("allOf", "anyOf", "oneOf", "prefixItems"):
        for index, child in enumerate(node.get(key) or [] if isinstance(node.get(key), list) else []):
            _fix_subschemas(child, f"{where}/{key}/{index}", fixes)


def _as_schema(value: Any) -> dict[str, Any]:
    if isinstance(value, str) and value.strip().lower() in TYPE_NAMES:
        return {"type": value.strip().lower()}
    if isinstance(value, list) and value and all(isinstance(item, str) and item.lower() in TYPE_NAMES for item in value):
        return {"type": [item.lower() for item in value]}
    if isinstance(value, str):
        return {"type": "string", "description": value}
    return {}


def check_schema(schema: Any) -> dict[str, Any]:
    """`schema` itself when it is valid against the 2020-12 meta-schema and describes a JSON object; else SchemaRefused
    naming the first problem and its place in the schema."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    if not isinstance(schema, dict):
        raise SchemaRefused(f"the schema must be a JSON object, got {type(schema).__name__}")
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        place = "/".join(str(part) for part in exc.absolute_path) or "(top level)"
        raise SchemaRefused(f"not a valid JSON Schema 2020-12 at {place}: {exc.message}") from None
    kind = schema.get("type")
    if kind != "object" and not (isinstance(kind, list) and kind == ["object"]):
        raise SchemaRefused(f"a record is a JSON object: the schema's top-level type must be \"object\", got {kind!r}")
    return schema


def prepare_schema(draft: Any) -> tuple[dict[str, Any], list[str]]:
    """Sanitize, then check: the job's schema and the corrections made."""
    schema, fixes = sanitize_schema(draft)
    return check_schema(schema), fixes


def record_error(data: Any, schema: dict[str, Any]) -> str | None:
    """None when `data` is valid against `schema`; else the first error, with its place in the record."""
    from jsonschema import Draft202012Validator

    error = next(iter(sorted(Draft202012Validator(schema).iter_errors(data), key=lambda e: list(e.absolute_path))), None)
    if error is None:
        return None
    place = "/".join(str(part) for part in error.absolute_path)
    return f"not valid against the schema{f' at {place}' if place else ''}: {error.message}"
