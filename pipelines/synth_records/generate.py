"""One record, one call (seed 001): the schema as the structured output, the answer parsed and validated against
the schema; a failed call, an unparsable answer or an invalid record is retried once when configured, and otherwise
recorded as `{i, ok: false, error}`. The schema draft is one call too."""

from __future__ import annotations

import time
from typing import Any

from actors.engines.types import GenerationRequest
from pipelines.synth_records.prompts import JSON_OBJECT, parse_object, record_messages, schema_messages
from pipelines.synth_records.schema import prepare_schema, record_error
from pipelines.synth_records.settings import SynthRecordsSettings
from trajforge.errors import TrajforgeError


class DraftFailed(TrajforgeError, RuntimeError):
    """The schema draft call gave no usable JSON object."""


def _call(engine: Any, messages: list[dict[str, str]], schema: dict[str, Any], max_tokens: int, temperature: float,
          seed: int | None) -> dict[str, Any]:
    """The answer's JSON object; ValueError with the reason when the call failed or the answer is not one."""
    request = GenerationRequest(messages=messages, max_tokens=max_tokens, temperature=temperature, seed=seed, json_schema=schema)
    completion = engine.generate([request])[0]
    if completion.finish_reason == "error":
        raise ValueError(f"the inference call failed: {completion.error}")
    try:
        return parse_object(completion.text)
    except ValueError as exc:
        cut = " (cut at max_tokens)" if completion.finish_reason == "length" else ""
        raise ValueError(f"{exc}{cut}") from None


def generate_record(engine: Any, details: dict[str, Any], index: int, total: int, settings: SynthRecordsSettings) -> dict[str, Any]:
    """Record `index` as its results line: `{i, ok: true, data}` or `{i, ok: false, error}` (the last attempt's)."""
    attempts = 2 if settings.retry_inference_on_failure else 1
    error = ""
    for attempt in range(attempts):
        seed = None if settings.seed is None else settings.seed + index + attempt * total
        try:
            data = _call(engine, record_messages(details, index, total), details["schema"], settings.max_tokens,
                         settings.temperature, seed)
        except ValueError as exc:
            error = str(exc)
            continue
        problem = record_error(data, details["schema"])
        if problem is None:
            return {"i": index, "ok": True, "data": data}
        error = problem
    return {"i": index, "ok": False, "error": error if attempts == 1 else f"{error} (after a retry)"}


def draft_schema(engine: Any, description: str, instructions: str, settings: SynthRecordsSettings,
                 dataset_mode: bool = False) -> dict[str, Any]:
    """One call drafts the schema: {schema, fixes, schemaGeneratedAt, schemaDurationMs}; SchemaRefused when the
    sanitized draft is still not a valid 2020-12 object schema, DraftFailed when the answer is no JSON object."""
    from pipelines.synth_records.store import now

    started = time.perf_counter()
    try:
        draft = _call(engine, schema_messages(description, instructions, dataset_mode), JSON_OBJECT, settings.schema_max_tokens,
                      settings.temperature, settings.seed)
    except ValueError as exc:
        raise DraftFailed(f"the schema draft failed: {exc}") from None
    duration_ms = round((time.perf_counter() - started) * 1000)
    schema, fixes = prepare_schema(draft)
    return {"schema": schema, "fixes": fixes, "schemaGeneratedAt": now(), "schemaDurationMs": duration_ms}
