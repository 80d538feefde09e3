"""Schema-first synthetic records (seed 001) on the session's Ray: peers as actors with the transformers engine and
the small model, the openai engine against a local stub (a bad record failed with its index after one retry), and a
job whose driver is SIGKILLed midway, resumed without losing or repeating a record."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from synth_records_stub import StubServer

from pipelines.synth_records.cli import main
from pipelines.synth_records.constants import SCHEMA_DIALECT, SYSTEM_PROMPT
from pipelines.synth_records.export import export_job
from pipelines.synth_records.jobs import create_job
from pipelines.synth_records.results import read_results
from pipelines.synth_records.runner import is_running, run_job
from pipelines.synth_records.schema import record_error
from pipelines.synth_records.settings import SynthRecordsSettings
from pipelines.synth_records.store import JobFiles, list_job_ids

pytestmark = pytest.mark.usefixtures("serve_url")
REPO = Path(__file__).resolve().parents[2]
SCHEMA = {"type": "object", "additionalProperties": False, "required": ["name", "tier", "tags", "address"],
          "properties": {"name": {"type": "string", "maxLength": 12}, "tier": {"enum": ["free", "pro"]},
                         "tags": {"type": "array", "items": {"type": "string", "maxLength": 6}, "maxItems": 2},
                         "address": {"type": "object", "additionalProperties": False, "required": ["city"],
                                     "properties": {"city": {"type": "string", "maxLength": 8}}}}}


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    from trajforge.small_model import REPO as ROOT
    from trajforge.small_model import ensure_small_model

    sessions = [path.read_text(encoding="utf-8") for path in sorted((ROOT / "examples" / "sessions").glob("*.json"))]
    return ensure_small_model(tmp_path_factory.mktemp("models") / "small-qwen3", texts=sessions)


def _openai(lake: Path, url: str, **extra) -> dict:
    return {"lake": str(lake), "engine": "openai", "model": "stub", "peer_cpus": 0.05, "peers": 2, "update_every_k": 2,
            "openai": {"base_url": url, "api_key_env": None, "max_retries": 0, "token_ids_in_logprobs": False,
                       "continue_final_message": False}, **extra}


def test_a_small_job_with_the_small_model_gives_schema_valid_records(tmp_path, small_model):
    settings = SynthRecordsSettings(lake=tmp_path, model=str(small_model), peers=2, peer_cpus=0.05, max_tokens=96)
    files = create_job(settings, schema=SCHEMA, description="users of a SaaS product", records=5)
    base = run_job(settings, files.id, progress=False)
    assert base["status"] == "succeeded" and (base["totalOk"], base["totalFailed"], base["totalGenerated"]) == (5, 0, 5)
    assert base["jobFinishedAt"] and base["recordsDurationMs"] >= 0
    states = files.peer_states()
    assert [(s["generatedOk"], s["assigned"]) for s in states] == [(3, 3), (2, 2)] and all(s["finishedAt"] for s in states)
    assert [s["resultCid"] for s in states] == ["peers/peer-0.jsonl", "peers/peer-1.jsonl"]
    records = json.loads(export_job(files, "json"))
    assert len(records) == 5 and all(record_error(record, files.details()["schema"]) is None for record in records)
    assert not is_running(files)


@pytest.mark.parametrize("retry", [True, False])
def test_the_openai_engine_records_a_bad_record_with_its_index_after_one_retry(tmp_path, retry):
    invalid = json.dumps({"name": "x", "tier": "gold", "tags": [], "address": {"city": "y"}})
    stub = StubServer({3: ["not json at all", "still not json"], 5: [invalid]})
    try:
        settings = SynthRecordsSettings.model_validate(_openai(tmp_path, stub.url, retry_inference_on_failure=retry))
        files = create_job(settings, schema=SCHEMA, description="users", instructions="short names", records=8)
        base = run_job(settings, files.id, progress=False)
    finally:
        stub.close()
    attempts = 2 if retry else 1
    assert dict(stub.calls) == {index: attempts if index in (3, 5) else 1 for index in range(8)}
    failed = [3] if retry else [3, 5]
    assert base["status"] == "succeeded" and (base["totalOk"], base["totalFailed"]) == (8 - len(failed), len(failed))
    peer0, peer1 = files.peer_states()
    assert [error["index"] for error in peer0["errors"]] == [3] and "not JSON" in peer0["errors"][0]["message"]
    assert ("after a retry" in peer0["errors"][0]["message"]) == retry
    assert [error["index"] for error in peer1["errors"]] == ([] if retry else [5])
    results = {**read_results(files.peer_results_path("peer-0")), **read_results(files.peer_results_path("peer-1"))}
    assert sorted(results) == list(range(8)) and [i for i, r in results.items() if not r["ok"]] == failed
    assert set(results[3]) == {"i", "ok", "error"} and set(results[0]) == {"i", "ok", "data"}
    body = stub.bodies[0]
    assert body["messages"][0]["content"].startswith(SYSTEM_PROMPT) and body["response_format"]["json_schema"]["schema"]["type"] == "object"
    assert len(json.loads(export_job(files, "json"))) == 8 - len(failed)


def _lines(files: JobFiles) -> list[int]:
    indices = []
    for peer in files.base()["peers"]:
        path = files.peer_results_path(peer)
        indices += [json.loads(line)["i"] for line in path.read_bytes().split(b"\n") if line] if path.exists() else []
    return indices


def test_a_job_killed_midway_resumes_without_losing_or_repeating_a_record(tmp_path):
    import ray

    stub = StubServer(delay_s=0.25)
    lake, total = tmp_path / "lake", 24
    config = tmp_path / "synth.yaml"
    config.write_text(yaml.safe_dump({"synth_records": _openai(lake, stub.url)}))
    (tmp_path / "schema.json").write_text(json.dumps(SCHEMA))
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address,
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    driver = subprocess.Popen([sys.executable, "-m", "pipelines.synth_records", "run", "--config", str(config), "--schema", "schema.json",
                               "--description", "users", "--records", str(total), "--no-progress"],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (list_job_ids(lake) and len(_lines(JobFiles(lake, list_job_ids(lake)[0]))) >= 6):
            assert driver.poll() is None, driver.communicate()
            assert time.monotonic() < deadline, "the job wrote nothing within 120 s"
            time.sleep(0.05)
        os.kill(driver.pid, signal.SIGKILL)
        driver.communicate(timeout=30)
        files = JobFiles(lake, list_job_ids(lake)[0])
        written = set(_lines(files))
        assert 6 <= len(written) < total and files.base()["status"] == "running" and not is_running(files)
        assert main(["resume", files.id, "--config", str(config), "--no-progress"]) == 0
        base = files.base()
    finally:
        stub.close()
        if driver.poll() is None:
            driver.kill()
    lines = _lines(files)
    assert sorted(lines) == list(range(total))  # none lost, none twice (a torn line a killed worker left is cut)
    assert all(stub.calls[index] == 1 for index in written)  # what was written before the kill is never asked again
    assert base["status"] == "succeeded" and (base["totalOk"], base["totalGenerated"]) == (total, total)
    assert [record["name"] for record in json.loads(export_job(files, "json"))] == [f"user{i}" for i in range(total)]


def test_a_peer_whose_engine_cannot_start_fails_the_job_with_the_reason_and_a_finished_job_stays_finished(tmp_path):
    settings = SynthRecordsSettings(lake=tmp_path, model=str(tmp_path / "no-model"), peers=1, peer_cpus=0.05)
    files = create_job(settings, schema=SCHEMA, description="users", records=2)
    base = run_job(settings, files.id, progress=False)
    assert base["status"] == "failed" and base["error"].startswith("peer-0: ") and base["totalGenerated"] == 0
    stub = StubServer()
    try:
        working = SynthRecordsSettings.model_validate(_openai(tmp_path, stub.url))
        base = run_job(working, files.id, progress=False)  # resumed with an engine that works
        assert base["status"] == "succeeded" and base["error"] is None and base["totalOk"] == 2
        assert run_job(working, files.id, progress=False) == base and sum(stub.calls.values()) == 2
    finally:
        stub.close()


def test_run_without_a_schema_drafts_one_first_and_records_its_timing(tmp_path, capsys):
    stub = StubServer(draft=json.dumps({**SCHEMA, "$schema": "http://json-schema.org/schema#"}))
    config = tmp_path / "synth.yaml"
    config.write_text(yaml.safe_dump({"synth_records": _openai(tmp_path / "lake", stub.url)}))
    try:
        assert main(["run", "--description", "users", "--records", "3", "--config", str(config), "--no-progress"]) == 0
    finally:
        stub.close()
    out, err = capsys.readouterr()
    base = json.loads(out)
    details = JobFiles(tmp_path / "lake", base["id"]).details()
    assert base["status"] == "succeeded" and base["totalOk"] == 3 and "schema sanitized: $schema" in err
    assert details["schema"] == {**SCHEMA, "$schema": SCHEMA_DIALECT} and base["schemaGeneratedAt"] <= base["createdAt"]
    assert isinstance(base["schemaDurationMs"], int) and len(stub.bodies) == 4  # one draft call, then one call per record


def test_more_peers_than_the_cluster_holds_at_once_run_in_turn(tmp_path):
    import ray

    free = ray.available_resources().get("CPU", 0.0)
    stub = StubServer()
    lake = tmp_path / "lake"
    config = tmp_path / "synth.yaml"  # each peer asks for more than half the free CPUs: one runs at a time
    config.write_text(yaml.safe_dump({"synth_records": _openai(lake, stub.url, peers=3, peer_cpus=round(free * 0.6, 2))}))
    (tmp_path / "schema.json").write_text(json.dumps(SCHEMA))
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address,
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    driver = subprocess.Popen([sys.executable, "-m", "pipelines.synth_records", "run", "--config", str(config), "--schema", "schema.json",
                               "--description", "users", "--records", "6", "--no-progress"],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = driver.communicate(timeout=120)  # the old runner kept every actor until all were done: it never ended
    finally:
        stub.close()
        if driver.poll() is None:
            driver.kill()
            driver.communicate()
    base = json.loads(out)
    assert driver.returncode == 0 and base["status"] == "succeeded" and (base["totalOk"], base["peerCount"]) == (6, 3), err
    assert sorted(_lines(JobFiles(lake, base["id"]))) == list(range(6)) and sorted(stub.calls) == list(range(6))


def test_resume_generates_the_rest_with_the_jobs_recorded_inference_unless_a_set_overrides_it(tmp_path, capsys):
    first, moved = StubServer(), StubServer()
    lake = tmp_path / "lake"
    try:
        settings = SynthRecordsSettings.model_validate(_openai(lake, first.url, temperature=0.2, seed=100))
        files = create_job(settings, schema=SCHEMA, description="users", records=4)  # created, then its run killed at once
        assert main(["resume", files.id, "--lake", str(lake), "--no-progress", "--set", "synth_records.peer_cpus=0.05"]) == 0
        assert sorted(first.calls) == [0, 1, 2, 3] and {(b["temperature"], b["seed"]) for b in first.bodies} == {(0.2, 100 + i) for i in range(4)}
        assert json.loads(capsys.readouterr().out)["totalOk"] == 4  # not the configured engine (the embedded model)
        again = create_job(settings, schema=SCHEMA, description="users", records=2)
        assert main(["resume", again.id, "--lake", str(lake), "--no-progress", "--set", "synth_records.peer_cpus=0.05",
                     "--set", f"synth_records.openai.base_url={moved.url}"]) == 0  # the endpoint moved
        assert sorted(moved.calls) == [0, 1] and sorted(first.calls) == [0, 1, 2, 3]
    finally:
        first.close()
        moved.close()
