"""Confirming a job (seed 001's POST /api/tasks/confirm): the input checked (records within [1, the cap],
description non-empty and size-limited), the schema sanitized and validated, the records split into peer ranges,
and the job's files written: details and peer states first, the job base last (a job exists once its base does)."""

from __future__ import annotations

import getpass
from typing import Any

from pipelines.synth_records.ranges import peer_ids, split_ranges
from pipelines.synth_records.schema import prepare_schema
from pipelines.synth_records.settings import SynthRecordsSettings
from pipelines.synth_records.store import JobFiles, new_job_id, now, refresh_metrics, write_json
from trajforge.errors import TrajforgeError


class JobRefused(TrajforgeError, ValueError):
    """The job's input is outside the limits: the message names which and how."""


def check_input(settings: SynthRecordsSettings, description: str, instructions: str, records: int | None = None) -> None:
    if not description.strip():
        raise JobRefused("the description is empty: say what the dataset is about (--description)")
    if len(description) + len(instructions) > settings.max_prompt_chars:
        raise JobRefused(f"description and instructions are {len(description) + len(instructions)} characters together, over "
                         f"synth_records.max_prompt_chars ({settings.max_prompt_chars})")
    if records is not None and not 1 <= records <= settings.max_records_per_job:
        raise JobRefused(f"{records} records: a job has 1 to synth_records.max_records_per_job ({settings.max_records_per_job}) "
                         f"records; raise it with --set synth_records.max_records_per_job={records}" if records > 1 else
                         f"{records} records: a job has at least 1")


def inference_of(settings: SynthRecordsSettings) -> dict[str, Any]:
    """The seed's `inference` {baseUrl, path, model, parameters}: where the records' calls go."""
    parameters = {"engine": settings.engine, "max_tokens": settings.max_tokens, "temperature": settings.temperature,
                  "seed": settings.seed, "retryInferenceOnFailure": settings.retry_inference_on_failure}
    if settings.engine == "openai":
        return {"baseUrl": (settings.openai.base_url or "").rstrip("/").removesuffix("/v1"), "path": "/v1/chat/completions",
                "model": settings.model, "parameters": parameters}
    return {"baseUrl": "in-process", "path": "transformers", "model": settings.model, "parameters": parameters}


def recorded_settings(inference: dict[str, Any]) -> dict[str, Any]:
    """What `inference_of` recorded, back as the settings (dotted paths) a resumed run generates the rest with."""
    parameters = inference.get("parameters") or {}
    recorded = {"synth_records.engine": parameters.get("engine"), "synth_records.model": inference.get("model"),
                "synth_records.max_tokens": parameters.get("max_tokens"), "synth_records.temperature": parameters.get("temperature"),
                "synth_records.retry_inference_on_failure": parameters.get("retryInferenceOnFailure")}
    recorded = {path: value for path, value in recorded.items() if value is not None}
    if "seed" in parameters:
        recorded["synth_records.seed"] = parameters["seed"]
    if parameters.get("engine") == "openai" and inference.get("baseUrl"):
        recorded["synth_records.openai.base_url"] = inference["baseUrl"]
    return recorded


def create_job(settings: SynthRecordsSettings, *, schema: Any, description: str, records: int, instructions: str = "",
               title: str = "", dataset_mode: bool = False, draft: dict[str, Any] | None = None) -> JobFiles:
    """A new queued job; `draft` carries the schema draft's timing (schemaGeneratedAt, schemaDurationMs) when one was
    made, else the schema was given and its timing is zero."""
    check_input(settings, description, instructions, records)
    schema, _ = prepare_schema(schema)
    created, draft = now(), draft or {}
    files = JobFiles(settings.lake, new_job_id())
    ranges = split_ranges(records, settings.peers)
    peers = peer_ids(len(ranges))
    timing = {"schemaGeneratedAt": draft.get("schemaGeneratedAt", created), "schemaDurationMs": draft.get("schemaDurationMs", 0),
              "schemaRefreshes": draft.get("schemaRefreshes", 0)}
    write_json(files.details_path, {"id": files.id, "owner": getpass.getuser(), "description": description,
                                    "instructions": instructions, "schema": schema, "inference": inference_of(settings),
                                    "datasetMode": dataset_mode, "createdAt": created, **timing})
    for peer, (start, end) in zip(peers, ranges):
        files.write_peer_state({"peerId": peer, "assigned": end - start, "range": {"start": start, "end": end},
                                "generatedOk": 0, "generatedFailed": 0, "lastUpdateAt": None, "startedAt": None,
                                "finishedAt": None, "errors": []})
    files.write_base({"id": files.id, "owner": getpass.getuser(), "title": title or description.strip().splitlines()[0][:80],
                      "status": "queued", "totalRecords": records, "datasetMode": dataset_mode, "peers": peers,
                      "peerCount": len(peers), "jobDetailsCid": files.details_path.name, "totalGenerated": 0, "totalOk": 0,
                      "totalFailed": 0, "createdAt": created,
                      "jobStartedAt": None, "jobFinishedAt": None, "recordsDurationMs": None, **timing})
    refresh_metrics(settings.lake)
    return files
