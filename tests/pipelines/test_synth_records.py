"""Schema-first synthetic records (seed 001) without Ray: ranges, schema sanitizing and validation, the draft call
against a local OpenAI-compatible stub, the results file, job creation limits, export, settings."""

from __future__ import annotations

import csv
import io
import json

import pytest
from synth_records_stub import StubServer, good_record

from pipelines.synth_records.constants import SCHEMA_DIALECT, SCHEMA_SYSTEM_PROMPT
from pipelines.synth_records.export import NotFinished, export_job
from pipelines.synth_records.generate import DraftFailed, draft_schema
from pipelines.synth_records.jobs import JobRefused, create_job
from pipelines.synth_records.prompts import parse_object
from pipelines.synth_records.ranges import split_ranges
from pipelines.synth_records.results import ResultsWriter, read_results
from pipelines.synth_records.schema import SchemaRefused, check_schema, prepare_schema, record_error, sanitize_schema
from pipelines.synth_records.settings import SynthRecordsSettings, load_synth_settings
from pipelines.synth_records.store import JobFiles, compute_metrics
from trajforge.errors import ConfigError

SCHEMA = {"$schema": SCHEMA_DIALECT, "type": "object", "additionalProperties": False, "required": ["name", "tier", "tags", "address"],
          "properties": {"name": {"type": "string", "maxLength": 12}, "tier": {"enum": ["free", "pro"]},
                         "tags": {"type": "array", "items": {"type": "string"}},
                         "address": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


@pytest.mark.parametrize("total", [1, 2, 5, 7, 10, 199, 200])
@pytest.mark.parametrize("peers", [1, 2, 3, 8])
def test_ranges_cover_every_record_exactly_once_in_order(total, peers):
    ranges = split_ranges(total, peers)
    assert [index for start, end in ranges for index in range(start, end)] == list(range(total))
    sizes = [end - start for start, end in ranges]
    assert len(ranges) == min(total, peers) and min(sizes) >= 1 and max(sizes) - min(sizes) <= 1
    assert sizes == sorted(sizes, reverse=True)  # the first peers take the remainder


def test_ranges_refuse_nothing_to_split():
    with pytest.raises(ValueError, match="at least one record"):
        split_ranges(0, 2)


def test_sanitizing_fixes_the_dialect_and_property_values_that_are_not_schemas():
    draft = {"$schema": "http://json-schema.org/draft-07/schema#", "properties": {
        "name": "string", "bio": "a short biography", "age": ["integer", "null"], "score": 3, "ok": True,
        "address": {"type": "object", "properties": {"city": "String"}}, "tags": {"type": "array", "items": "string"}}}
    schema, fixes = sanitize_schema(draft)
    assert schema["$schema"] == SCHEMA_DIALECT and schema["type"] == "object"
    assert schema["properties"] == {"name": {"type": "string"}, "bio": {"type": "string", "description": "a short biography"},
                                    "age": {"type": ["integer", "null"]}, "score": {}, "ok": True,
                                    "address": {"type": "object", "properties": {"city": {"type": "string"}}},
                                    "tags": {"type": "array", "items": {"type": "string"}}}
    assert any("draft-07" in fix for fix in fixes) and any(fix.startswith("/properties/address/properties/city") for fix in fixes)
    assert draft["properties"]["name"] == "string"  # the draft itself is left as it was
    check_schema(schema)


@pytest.mark.parametrize("draft, reason", [
    ({"type": "object", "properties": {"a": {"type": "strin"}}}, "at properties/a/type"),
    ({"type": "object", "required": "a"}, "at required"),
    ({"type": "object", "properties": {"a": {"minLength": -1}}}, "at properties/a/minLength"),
    ({"type": "array", "items": {"type": "string"}}, "top-level type must be \"object\""),
    ([{"type": "object"}], "must be a JSON object"),
    ("{not json", "not JSON"),
])
def test_invalid_drafts_are_refused_with_the_reason(draft, reason):
    with pytest.raises(SchemaRefused, match=reason.replace("(", r"\(")) as refused:
        prepare_schema(draft)
    assert "2020-12" in str(refused.value) or "object" in str(refused.value) or "JSON" in str(refused.value)


def test_records_are_validated_against_the_schema_with_the_place_of_the_error():
    assert record_error(good_record(1), SCHEMA) is None
    assert "at address/city" in record_error({**good_record(1), "address": {"city": 5}}, SCHEMA)
    assert "Additional properties" in record_error({**good_record(1), "extra": 1}, SCHEMA)


def test_answers_are_read_as_json_objects():
    assert parse_object('```json\n{"a": 1}\n```') == {"a": 1}
    with pytest.raises(ValueError, match="not an object"):
        parse_object("[1, 2]")
    with pytest.raises(ValueError, match="not JSON"):
        parse_object("sorry, no")


def _openai_settings(tmp_path, url, **extra):
    return SynthRecordsSettings(lake=tmp_path / "lake", engine="openai", model="stub", peer_cpus=0.05,
                                openai={"base_url": url, "api_key_env": None, "max_retries": 0, "token_ids_in_logprobs": False,
                                        "continue_final_message": False}, **extra)


def _engine(settings):
    from actors.engines.factory import build_engine

    return build_engine(settings.actor_settings())


def test_the_draft_is_one_call_with_the_schema_prompt_and_a_json_object_output_then_sanitized(tmp_path):
    draft = {"$schema": "https://json-schema.org/draft-07/schema", "properties": {"title": "string", "pages": "integer"}}
    stub = StubServer(draft=json.dumps(draft))
    try:
        settings = _openai_settings(tmp_path, stub.url)
        result = draft_schema(_engine(settings), "books of a library", "short titles", settings)
    finally:
        stub.close()
    assert result["schema"] == {"$schema": SCHEMA_DIALECT, "type": "object",
                                "properties": {"title": {"type": "string"}, "pages": {"type": "integer"}}}
    assert len(result["fixes"]) == 4 and result["schemaDurationMs"] >= 0
    (body,) = stub.bodies
    assert body["messages"][0] == {"role": "system", "content": SCHEMA_SYSTEM_PROMPT}
    assert "books of a library" in body["messages"][1]["content"] and "short titles" in body["messages"][1]["content"]
    assert body["response_format"]["json_schema"]["schema"] == {"type": "object"}


@pytest.mark.parametrize("answer, error", [
    ('{"type": "object", "properties": {"a": {"type": 7}}}', SchemaRefused),
    ("no schema today", DraftFailed),
])
def test_a_bad_draft_is_refused(tmp_path, answer, error):
    stub = StubServer(draft=answer)
    try:
        settings = _openai_settings(tmp_path, stub.url)
        with pytest.raises(error):
            draft_schema(_engine(settings), "books", "", settings)
    finally:
        stub.close()


def test_the_results_file_cuts_a_torn_tail_and_refuses_an_index_twice(tmp_path):
    path = tmp_path / "peer-0.jsonl"
    path.write_bytes(b'{"i":0,"ok":true,"data":{}}\n{"i":1,"ok":false,"error":"x"}\n{"i":2,"ok":tr')
    with ResultsWriter(path, wait_s=0) as writer:
        assert sorted(writer.done) == [0, 1]
        writer.append({"i": 2, "ok": True, "data": {"a": 1}})
        with pytest.raises(ValueError, match="already"):
            writer.append({"i": 1, "ok": True, "data": {}})
    assert path.read_bytes().count(b"\n") == 3 and read_results(path)[2]["data"] == {"a": 1}


def test_a_second_writer_waits_for_the_first_then_gives_up(tmp_path):
    from pipelines.synth_records.results import ResultsBusy

    with ResultsWriter(tmp_path / "p.jsonl", wait_s=0):
        with pytest.raises(ResultsBusy, match="still being written"):
            ResultsWriter(tmp_path / "p.jsonl", wait_s=0.3)
    ResultsWriter(tmp_path / "p.jsonl", wait_s=0).close()


@pytest.mark.parametrize("records, description, match", [
    (201, "users", "max_records_per_job \\(200\\)"), (0, "users", "at least 1"), (5, "  ", "description is empty"),
    (5, "x" * 9000, "max_prompt_chars"),
])
def test_jobs_outside_the_limits_are_refused(tmp_path, records, description, match):
    with pytest.raises(JobRefused, match=match):
        create_job(SynthRecordsSettings(lake=tmp_path), schema=SCHEMA, description=description, records=records)
    assert not (tmp_path / "synth_records").exists()


def _finished_job(tmp_path, lines):
    files = create_job(SynthRecordsSettings(lake=tmp_path, peers=2), schema=SCHEMA, description="users", records=4)
    for peer, chunk in zip(("peer-0", "peer-1"), (lines[:2], lines[2:])):
        files.peer_results_path(peer).write_text("".join(json.dumps(line) + "\n" for line in chunk))
    return files


def test_export_merges_the_peers_in_index_order_as_json_and_csv(tmp_path):
    files = _finished_job(tmp_path, [{"i": 1, "ok": True, "data": good_record(1)}, {"i": 0, "ok": True, "data": good_record(0)},
                                     {"i": 3, "ok": True, "data": {**good_record(3), "name": 'a "b", c'}},
                                     {"i": 2, "ok": False, "error": "bad"}])
    with pytest.raises(NotFinished, match="resume"):
        export_job(files, "json")
    base = files.base()
    files.write_base({**base, "status": "succeeded"})
    assert json.loads(export_job(files, "json")) == [good_record(0), good_record(1), {**good_record(3), "name": 'a "b", c'}]
    rows = list(csv.reader(io.StringIO(export_job(files, "csv"))))
    assert rows[0] == ["name", "tier", "tags", "address"]
    assert rows[1] == ["user0", "free", '["t0"]', '{"city":"c0"}'] and rows[3][0] == 'a "b", c' and len(rows) == 4
    with_failed = list(csv.reader(io.StringIO(export_job(files, "csv", include_failed=True))))
    assert with_failed[0][:3] == ["_i", "_ok", "_error"] and with_failed[3] == ["2", "false", "bad", "", "", "", ""]
    assert [line["i"] for line in json.loads(export_job(files, "json", include_failed=True))] == [0, 1, 2, 3]


def test_a_job_has_the_seeds_fields_and_the_metrics_count_it(tmp_path):
    files = create_job(SynthRecordsSettings(lake=tmp_path, peers=3), schema={"properties": {"a": "string"}}, description="d",
                       records=7, instructions="i")
    base, details = files.base(), files.details()
    assert {"id", "owner", "title", "status", "totalRecords", "peers", "peerCount", "totalGenerated", "totalOk", "totalFailed",
            "createdAt", "schemaGeneratedAt", "jobStartedAt", "jobFinishedAt", "schemaDurationMs", "recordsDurationMs",
            "schemaRefreshes", "updatedAt", "jobDetailsCid"} <= set(base)
    assert (files.dir / base["jobDetailsCid"]).read_text() == files.details_path.read_text()  # the seed's R1FS id, a file here
    assert base["status"] == "queued" and base["peers"] == ["peer-0", "peer-1", "peer-2"]
    assert [state["range"] for state in files.peer_states()] == [{"start": 0, "end": 3}, {"start": 3, "end": 5}, {"start": 5, "end": 7}]
    assert set(files.peer_state("peer-0")) == {"peerId", "assigned", "range", "generatedOk", "generatedFailed", "lastUpdateAt",
                                               "startedAt", "finishedAt", "errors"}
    assert details["schema"]["$schema"] == SCHEMA_DIALECT and set(details["inference"]) == {"baseUrl", "path", "model", "parameters"}
    assert compute_metrics(tmp_path) == {"totalJobs": 1, "totalRecordsRequested": 7, "totalRecordsGenerated": 0, "activeJobs": 1,
                                         "failedJobs": 0, "lastJobAt": base["createdAt"]}
    assert json.loads((tmp_path / "synth_records" / "metrics.json").read_text())["totalJobs"] == 1
    assert JobFiles.existing(tmp_path, files.id).id == files.id


def test_the_shipped_config_loads_and_a_bad_value_names_its_field(monkeypatch):
    settings = load_synth_settings()
    assert (settings.max_records_per_job, settings.update_every_k, settings.retry_inference_on_failure) == (200, 5, True)
    with pytest.raises(ConfigError, match=r"synth_records\.peers \(set by --set synth_records\.peers\)"):
        load_synth_settings(assignments=[("synth_records.peers", 0)])
    monkeypatch.setenv("TRAJFORGE__SYNTH_RECORDS__UPDATE_EVERY_K", "zero")
    with pytest.raises(ConfigError, match="synth_records.update_every_k .set by TRAJFORGE__SYNTH_RECORDS__UPDATE_EVERY_K"):
        load_synth_settings()


def _cli(argv, capsys):
    from pipelines.synth_records.cli import main

    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_the_command_refuses_a_set_it_would_ignore_and_a_bad_schema_with_the_reason(tmp_path, capsys):
    code, _, err = _cli(["list", "--lake", str(tmp_path), "--set", "teacher.sample=1"], capsys)
    assert code == 2 and "--set teacher.sample=1: python -m pipelines.synth_records list reads no config section 'teacher'" in err
    (tmp_path / "bad.json").write_text(json.dumps({"type": "object", "properties": {"a": {"type": "strin"}}}))
    code, _, err = _cli(["run", "--schema", str(tmp_path / "bad.json"), "--description", "d", "--records", "2",
                         "--lake", str(tmp_path / "lake"), "--set", "synth_records.engine=openai",
                         "--set", "synth_records.openai.base_url=http://127.0.0.1:9"], capsys)
    assert code == 2 and "not a valid JSON Schema 2020-12 at properties/a/type" in err and not (tmp_path / "lake").exists()
    code, _, err = _cli(["run", "--schema", str(tmp_path), "--description", "d", "--records", "2", "--lake", str(tmp_path / "lake"),
                         "--set", "synth_records.engine=openai", "--set", "synth_records.openai.base_url=http://127.0.0.1:9"], capsys)
    assert code == 2 and f"schema file {tmp_path} given with --schema cannot be read: Is a directory" in err
    assert "Traceback" not in err and not (tmp_path / "lake").exists()
    with pytest.raises(SystemExit):
        _cli(["run", "--records", "0", "--description", "d", "--lake", str(tmp_path / "lake")], capsys)
    assert "--records: 0 is not at least 1" in capsys.readouterr().err and not (tmp_path / "lake").exists()


def test_a_lake_that_is_a_file_is_refused_by_every_verb_and_nothing_is_written(tmp_path, capsys):
    """run made its job folder under the file (a NotADirectoryError traceback); list showed an empty lake."""
    a_file = tmp_path / "lake"
    a_file.write_text("not a lake\n")
    (tmp_path / "schema.json").write_text(json.dumps({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}))
    for verb in (["run", "--schema", str(tmp_path / "schema.json"), "--description", "d", "--records", "1",
                  "--set", "synth_records.engine=openai", "--set", "synth_records.openai.base_url=http://127.0.0.1:9"], ["list"]):
        code, _, err = _cli([*verb, "--lake", str(a_file)], capsys)
        assert code == 2 and f"synth_records.lake (--lake): {a_file} is not a folder; give the lake that holds the jobs" in err, err
        assert "Traceback" not in err and a_file.read_text() == "not a lake\n"


def test_the_command_lists_shows_and_exports_a_job(tmp_path, capsys):
    files = _finished_job(tmp_path, [{"i": 0, "ok": True, "data": good_record(0)}, {"i": 1, "ok": True, "data": good_record(1)},
                                     {"i": 2, "ok": True, "data": good_record(2)}, {"i": 3, "ok": False, "error": "bad"}])
    files.write_base({**files.base(), "status": "running"})
    code, out, _ = _cli(["status", files.id, "--lake", str(tmp_path), "--details"], capsys)
    shown = json.loads(out)
    assert code == 0 and shown["job"]["id"] == files.id and "resume" in shown["note"] and shown["details"]["description"] == "users"
    code, out, _ = _cli(["list", "--lake", str(tmp_path), "--json"], capsys)
    assert code == 0 and json.loads(out)["metrics"]["activeJobs"] == 1
    code, _, err = _cli(["export", files.id, "--lake", str(tmp_path)], capsys)
    assert code == 2 and "--partial" in err
    code, _, err = _cli(["export", files.id, "--lake", str(tmp_path), "--partial", "--format", "csv", "--out", str(tmp_path / "o.csv")], capsys)
    assert code == 0 and (tmp_path / "o.csv").read_text().splitlines()[1] == 'user0,free,"[""t0""]","{""city"":""c0""}"'


def test_the_openai_engine_needs_an_endpoint():
    with pytest.raises(ConfigError, match=r"synth_records.engine \(set by --set synth_records.engine\): .*engine openai needs openai.base_url"):
        load_synth_settings(assignments=[("synth_records.engine", "openai")])


def test_the_example_schema_is_a_valid_job_schema_as_written():
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "examples" / "synth_records" / "support_ticket.schema.json"
    schema, fixes = prepare_schema(json.loads(example.read_text()))
    assert fixes == [] and set(schema["required"]) <= set(schema["properties"])


def test_a_job_another_process_runs_is_not_run_twice(tmp_path):
    from pipelines.synth_records.runner import JobBusy, is_running, run_job, run_lock

    settings = SynthRecordsSettings(lake=tmp_path)
    files = create_job(settings, schema=SCHEMA, description="users", records=2)
    with run_lock(files):
        assert is_running(files)
        with pytest.raises(JobBusy, match="being run by another process"):
            run_job(settings, files.id, progress=False)
    assert not is_running(files) and files.base()["status"] == "queued"


@pytest.mark.parametrize("values", [{"engine": "openai", "model": "m", "openai": {"base_url": "http://h:1/v1"}, "seed": None,
                                     "temperature": 0.1, "max_tokens": 64, "retry_inference_on_failure": False},
                                    {"engine": "transformers", "model": "/models/x", "seed": 7}])
def test_a_jobs_recorded_inference_gives_back_the_settings_it_was_generated_with(values):
    from pipelines.synth_records.jobs import inference_of, recorded_settings

    settings = SynthRecordsSettings.model_validate(values)
    back = load_synth_settings(assignments=list(recorded_settings(inference_of(settings)).items()))
    fields = ("engine", "model", "seed", "temperature", "max_tokens", "retry_inference_on_failure")
    assert [getattr(back, name) for name in fields] == [getattr(settings, name) for name in fields]
    assert back.openai.base_url == ("http://h:1" if settings.engine == "openai" else None)


def test_ctrl_c_of_a_run_says_what_the_job_keeps_and_the_resume_command(tmp_path, capsys, monkeypatch):
    import pipelines.synth_records.runner as runner

    files = _finished_job(tmp_path, [{"i": 0, "ok": True, "data": good_record(0)}, {"i": 2, "ok": False, "error": "bad"}])

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run_job", interrupted)
    code, _, err = _cli(["resume", files.id, "--lake", str(tmp_path), "--set", "synth_records.engine=openai",
                         "--set", "synth_records.openai.base_url=http://127.0.0.1:9"], capsys)
    assert code == 130
    assert err.strip().splitlines()[-1] == (f"trajforge synth-records: interrupted; job {files.id} keeps the 2 of its 4 records generated "
                                           f"so far (1 valid), and a resume generates only the others: trajforge synth-records resume {files.id}")
