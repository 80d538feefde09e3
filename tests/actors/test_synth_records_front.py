"""Seed 001's records through this project's own OpenAI-compatible front: a synth_records job with the `openai`
engine pointed at the generate front serving the small model, its schema honoured as the structured output."""

from __future__ import annotations

import json

from pipelines.synth_records.export import export_job
from pipelines.synth_records.jobs import create_job
from pipelines.synth_records.runner import run_job
from pipelines.synth_records.schema import record_error
from pipelines.synth_records.settings import SynthRecordsSettings

SCHEMA = {"type": "object", "additionalProperties": False, "required": ["name", "plan"],
          "properties": {"name": {"type": "string", "maxLength": 10}, "plan": {"enum": ["free", "team"]},
                         "seats": {"type": "integer", "minimum": 1, "maximum": 50}}}


def test_a_job_through_the_projects_front_gives_schema_valid_records(tmp_path, front_url):
    settings = SynthRecordsSettings(lake=tmp_path, engine="openai", model="small", peers=2, peer_cpus=0.05, max_tokens=64,
                                    openai={"base_url": front_url, "api_key_env": None, "max_retries": 2})
    files = create_job(settings, schema=SCHEMA, description="customers of a SaaS product", records=4)
    base = run_job(settings, files.id, progress=False)
    assert base["status"] == "succeeded" and (base["totalOk"], base["totalFailed"]) == (4, 0), files.peer_states()
    records = json.loads(export_job(files, "json"))
    assert len(records) == 4 and all(record_error(record, files.details()["schema"]) is None for record in records)
    assert files.details()["inference"]["baseUrl"] == front_url and files.details()["inference"]["path"] == "/v1/chat/completions"
