"""The messages of the two kinds of call: the schema draft (SCHEMA_SYSTEM_PROMPT, a JSON object as output) and one
record (SYSTEM_PROMPT with the schema, the schema as the structured output), and reading an answer's JSON."""

from __future__ import annotations

import json
from typing import Any

from pipelines.synth_records.constants import (DATASET_RECORD_SYSTEM_PROMPT, DATASET_SCHEMA_SYSTEM_PROMPT, SCHEMA_SYSTEM_PROMPT,
                                               SYSTEM_PROMPT)

JSON_OBJECT = {"type": "object"}
"""The structured output of a schema draft: any JSON object (the seed's `response_format: json_object`)."""


def brief(description: str, instructions: str) -> str:
    return f"Description:\n{description.strip()}\n\nInstructions:\n{instructions.strip() or '(none)'}"


def schema_messages(description: str, instructions: str, dataset_mode: bool = False) -> list[dict[str, str]]:
    system = DATASET_SCHEMA_SYSTEM_PROMPT if dataset_mode else SCHEMA_SYSTEM_PROMPT
    return [{"role": "system", "content": system}, {"role": "user", "content": brief(description, instructions)}]


def record_messages(details: dict[str, Any], index: int, total: int) -> list[dict[str, str]]:
    system = DATASET_RECORD_SYSTEM_PROMPT if details.get("datasetMode") else SYSTEM_PROMPT
    schema = json.dumps(details["schema"], ensure_ascii=False)
    user = f"{brief(details['description'], details['instructions'])}\n\nWrite record {index + 1} of {total} as one JSON object."
    return [{"role": "system", "content": system + schema}, {"role": "user", "content": user}]


def parse_object(text: str) -> dict[str, Any]:
    """The JSON object an answer holds: the whole text, else from its first `{` to its last `}` (a model that wraps
    it in a code fence or a sentence); ValueError saying what it is otherwise."""
    text = text.strip()
    candidates = [text]
    if "{" in text and "}" in text:
        candidates.append(text[text.index("{"): text.rindex("}") + 1])
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
        raise ValueError(f"the answer is JSON but not an object ({type(value).__name__})")
    shown = text if len(text) <= 120 else text[:120] + "..."
    raise ValueError(f"the answer is not JSON: {shown!r}")
