"""DataGems' constants (seed 001, section 6): the system prompts, the JSON Schema dialect, the job statuses and the
defaults of its environment variables, here as named constants that `configs/synth_records.yaml` starts from."""

from __future__ import annotations

JOB_STATUSES = ("queued", "running", "succeeded", "failed")
SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
"""The `$schema` every job's schema names: drafts are sanitized to it and validated against its meta-schema."""

DEFAULT_MAX_RECORDS_PER_JOB = 200  # DATAGEN_MAX_RECORDS_PER_JOB
DEFAULT_UPDATE_EVERY_K = 5  # DATAGEN_UPDATE_EVERY_K_REQUESTS
DEFAULT_RETRY_ON_FAILURE = True  # RETRY_INFERENCE_ON_FAILURE: one extra call after a failed or unparsable answer

SCHEMA_SYSTEM_PROMPT = (
    "You design JSON Schemas for synthetic datasets. From the user's description and instructions, write ONE JSON "
    "Schema (draft 2020-12) describing a single record of the dataset: a JSON object with \"$schema\": "
    f"\"{SCHEMA_DIALECT}\", \"type\": \"object\", a \"properties\" object whose every value is itself a schema object "
    "(with a \"type\" and a short \"description\"), a \"required\" list and \"additionalProperties\": false. Keep it "
    "flat unless nesting is asked for, bound strings (maxLength) and numbers (minimum, maximum) where sensible, and use "
    "\"enum\" for fixed vocabularies. Answer with the schema as a JSON object only, no prose."
)
DATASET_SCHEMA_SYSTEM_PROMPT = (
    "You design JSON Schemas for training datasets of language models. From the user's description and instructions, "
    "write ONE JSON Schema (draft 2020-12) for a single training example: a JSON object with \"$schema\": "
    f"\"{SCHEMA_DIALECT}\", \"type\": \"object\", \"properties\" holding the example's input fields and its expected "
    "output field(s), each a schema object with a \"type\" and a \"description\", a \"required\" list and "
    "\"additionalProperties\": false. Answer with the schema as a JSON object only, no prose."
)
SYSTEM_PROMPT = (
    "You generate one record of a synthetic dataset. Answer with exactly one JSON object that is valid against the "
    "JSON Schema below: every required property present, no other properties, values of the declared types. Make "
    "each record realistic and different from the others; answer with the JSON object only, no prose.\n\nSchema:\n"
)
DATASET_RECORD_SYSTEM_PROMPT = (
    "You generate one training example for a language model. Answer with exactly one JSON object valid against the "
    "JSON Schema below, whose output field(s) correctly answer its input field(s). Vary topics, difficulty and phrasing "
    "between examples; answer with the JSON object only, no prose.\n\nSchema:\n"
)
