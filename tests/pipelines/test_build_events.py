"""Starcode telemetry events in the build: sent over HTTP to `POST /v1/events`, built into sft and behaviour rows."""

from __future__ import annotations

import json
import re
import shutil
import uuid

import duckdb
import numpy as np
import pytest
from helpers import EVENTS_KEY

from pipelines.build import load_build_settings, run_build
from pipelines.build.event_rows import turn_messages
from trajforge.cli.build_cmd import summary
from trajforge.client import contributor_id_for
from trajforge.lake import Lake

pytestmark = pytest.mark.usefixtures("serve_url")
ALICE, BOB = contributor_id_for("alice"), contributor_id_for("bob")
SECRET = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"


def settings_for(lake, **overrides):
    assignments = [("build.lake", str(lake)), ("build.cpus_per_task", 0.05), ("build.embedding.enabled", False)]
    return load_build_settings(assignments=assignments + [(f"build.{key}", value) for key, value in overrides.items()])


def rows(build_dir, name):
    return duckdb.sql(f"SELECT * FROM read_parquet('{build_dir / name}/*.parquet')").to_arrow_table().to_pylist()


@pytest.fixture(scope="module")
def events_lake(http, lakes, tmp_path_factory):
    """Events of two organisations sent through the main ingest app, then its raw/events copied into a lake of their own."""
    org, other = f"acme-{uuid.uuid4().hex[:6]}", f"globex-{uuid.uuid4().hex[:6]}"
    events = [
        {"event_id": "t1", "event_type": "conversation.turn", "org_id": org, "session_id": "s1", "contributor_id": ALICE,
         "payload": {"messages": [{"role": "user", "content": [{"type": "text", "text": "rename fetch_user"}]},
                                  {"role": "assistant", "content": f"done; token {SECRET}"}]}},
        {"event_id": "t2", "type": "conversation.turn", "org_id": org, "session_id": "s1", "contributor_id": BOB,
         "payload": {"user_message": "list the files", "tool_calls": [{"name": "list_files"}], "tool_results": [{"ok": True}],
                     "assistant_message": "three files", "repo": "acme/api"}},
        {"event_id": "t3", "event_type": "conversation.turn", "org_id": org, "payload": {"user_message": "no answer yet"}},
        {"event_id": "e1", "event_type": "model.error", "org_id": org, "session_id": "s1",
         "payload": {"code": "context_length_exceeded", "message": "prompt too long", "model": "qwen3-14b", "provider": "vllm"}},
        {"event_id": "b1", "event_type": "model.behavior", "org_id": other, "payload": {"behavior": "tool_loop", "tool": "read_file"}},
        {"event_id": "m1", "event_type": "session.meta", "org_id": org, "payload": {"os": "linux"}},
    ]
    assert http.post("/v1/events", json=events, headers={"x-company-api-key": EVENTS_KEY}).json()["accepted"] == len(events)
    lake = tmp_path_factory.mktemp("events") / "lake"
    for path in (lakes["main"] / "raw" / "events").glob("org=*"):
        if path.name in (f"org={org}", f"org={other}"):
            shutil.copytree(path, lake / "raw" / "events" / path.name)
    return lake, org, other


def test_turns_become_sft_rows_and_errors_behaviour_rows(events_lake):
    lake, org, other = events_lake
    manifest = run_build(settings_for(lake), progress=False)
    build_dir = Lake.at(lake).build_dir(manifest["build_id"])
    sft = {row["provenance"]["raw_ids"][0]: row for row in rows(build_dir, "sft")}
    assert len(sft) == 2 and all(row["source"] == "telemetry" and row["tier"] is None for row in sft.values())
    chats = sorted([[(m["role"], m["loss"]) for m in row["messages"]] for row in sft.values()], key=len)
    assert chats == [[("system", False), ("user", False), ("assistant", True)],
                     [("system", False), ("user", False), ("assistant", True), ("tool", False), ("assistant", True)]]  # the tool call is the model's too
    texts = json.dumps([row["messages"] for row in sft.values()])
    assert SECRET not in texts and "rename fetch_user" in texts
    assert all(row["num_tokens"] > row["loss_tokens"] > 0 for row in sft.values())
    assert any(row["provenance"]["repos"] == ["acme/api"] for row in sft.values())
    assert sorted(sft) == ["t1", "t2"]  # the event ids that were sent, then where each lies in the lake
    assert all(re.fullmatch(r"raw/events/.+\.jsonl:\d+", row["provenance"]["raw_ids"][1]) for row in sft.values()), list(sft.values())[0]["provenance"]
    behavior = {row["kind"]: row for row in rows(build_dir, "behavior")}
    assert behavior["model_error"]["behavior"] == "context_length_exceeded" and behavior["model_error"]["model_engine"] == "qwen3-14b"
    assert behavior["behavior"]["tool"] == "read_file" and behavior["behavior"]["session_id"].startswith(f"telemetry:{other}:")
    assert manifest["telemetry"]["events"] == 6 and manifest["telemetry"]["unusable_turns"] == 1
    assert manifest["telemetry"]["redactions"] and manifest["rows"]["sft"] == 2
    kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(manifest["telemetry"]["redactions"].items()))
    assert "github_token" in kinds and f"\n  telemetry redactions: {kinds}" in summary(manifest)  # the session redactions line leaves these out


def test_a_retried_event_counts_once_and_a_torn_line_is_quarantined(events_lake, tmp_path):
    lake, org, _ = events_lake
    copy = tmp_path / "lake"
    shutil.copytree(lake, copy, ignore=shutil.ignore_patterns("curated"))
    turns = next((copy / "raw" / "events").glob(f"org={org}/date=*/type=conversation.turn/*.jsonl"))
    first_line = turns.read_bytes().splitlines(keepends=True)[0]
    (turns.parent / "another-writer.jsonl").write_bytes(first_line + b'{"event_id": "t9", "ev')  # stored again, then a torn line
    manifest = run_build(settings_for(copy), progress=False)
    assert manifest["telemetry"]["duplicates"] == 1 and manifest["rows"]["sft"] == 2
    assert [record["reason"] for record in manifest["quarantine"]["records"]] == ["torn last line"]


def test_events_no_row_can_hold_are_quarantined_with_the_reason_and_the_build_goes_on(events_lake, tmp_path):
    # lines another writer stored (an older service took both): a lone surrogate, which no Parquet string can hold, and
    # a payload nested 500 levels, which the redactor's recursion could not walk; each stopped the whole build
    lake, org, _ = events_lake
    copy = tmp_path / "lake"
    shutil.copytree(lake, copy, ignore=shutil.ignore_patterns("curated"))
    folder = next((copy / "raw" / "events").glob(f"org={org}/date=*/type=conversation.turn"))
    lone = {"event_id": "t-lone", "event_type": "conversation.turn", "org_id": org,
            "payload": {"user_message": "half an emoji \ud83d", "assistant_message": "ok"}}
    deep = {"event_id": "t-deep", "event_type": "conversation.turn", "org_id": org,
            "payload": {"user_message": "deep", "assistant_message": "ok", "tool_results": json.loads("[" * 500 + "]" * 500)}}
    lines = [json.dumps({"event_id": event["event_id"], "event_type": "conversation.turn", "org_id": org, "event": event}).encode() + b"\n"
             for event in (lone, deep)]
    (folder / "another-writer.jsonl").write_bytes(b"".join(lines))
    manifest = run_build(settings_for(copy), progress=False)
    assert [(record["offset"], record["length"], record["reason"]) for record in manifest["quarantine"]["records"]] == [
        (0, len(lines[0]), "a lone UTF-16 surrogate in payload.user_message, which is not text (Parquet strings are UTF-8)"),
        (len(lines[0]), len(lines[1]), "nested more than 200 levels deep")]
    assert manifest["rows"]["sft"] == 2  # the rows of every other event, as before


def test_org_and_forgotten_contributors_filter_events(events_lake, tmp_path):
    from trajforge import tombstones

    lake, org, _ = events_lake
    copy = tmp_path / "lake"
    shutil.copytree(lake, copy, ignore=shutil.ignore_patterns("curated"))
    tombstones.forget(Lake.at(copy), BOB, reason="asked")
    manifest = run_build(settings_for(copy, orgs={org: []}), org=org, progress=False)
    build_dir = Lake.at(copy).build_dir(manifest["build_id"])
    assert {row["provenance"]["contributor_id"] for row in rows(build_dir, "sft")} == {ALICE}
    assert {row["kind"] for row in rows(build_dir, "behavior")} == {"model_error"}  # the other org's behaviour is left out


def test_an_org_the_events_name_needs_no_build_orgs_entry(events_lake, tmp_path):
    from trajforge.errors import ConfigError

    lake, org, other = events_lake
    copy = tmp_path / "lake"
    shutil.copytree(lake, copy, ignore=shutil.ignore_patterns("curated"))
    manifest = run_build(settings_for(copy), org=other, progress=False)  # as Starcode's export filters by TRAINING_ORG_ID
    build_dir = Lake.at(copy).build_dir(manifest["build_id"])
    assert manifest["org"] == other and manifest["rows"]["sft"] == 0
    assert [row["session_id"] for row in rows(build_dir, "behavior")] == [f"telemetry:{other}:b1"]
    with pytest.raises(ConfigError, match=rf"'nobody' is neither in build.orgs .*org_id of the lake's telemetry events .*{other}"):
        run_build(settings_for(copy), org="nobody", progress=False)


@pytest.mark.parametrize("payload,roles", [
    ({"prompt": "p", "completion": "c", "system_prompt": "s"}, ["system", "user", "assistant"]),
    ({"messages": [{"role": "developer", "content": "d"}, {"role": "user", "content": "u"}, {"role": "assistant", "tool_calls": [{"id": 1}]},
                   {"role": "tool", "content": "r"}, {"role": "assistant", "content": "a"}, {"role": "critic", "content": "x"}]},
     ["system", "user", "assistant", "tool", "assistant"]),
    ({"messages": [{"role": "user", "content": "u"}]}, []),
    ({}, []),
])
def test_turn_messages_read_the_shapes_agents_send(payload, roles):
    messages = turn_messages(payload)
    assert [message["role"] for message in messages] == roles
    assert all(message["loss"] == (message["role"] == "assistant") for message in messages[-1:])


def test_tool_calls_and_tool_results_keep_their_content():
    call = {"id": "c1", "type": "function", "function": {"name": "read_file", "arguments": "{\"path\": \"a.py\"}"}}
    result = {"tool": "read_file", "ok": True, "output": "print(1)"}
    flat = turn_messages({"user_message": "read a.py", "tool_calls": [call], "tool_results": [result], "assistant_message": "it prints 1"})
    assert [(m["role"], json.loads(m["content"])) for m in flat[1:3]] == [("assistant", [call]), ("tool", [result])]
    camel = turn_messages({"user_message": "read a.py", "toolCalls": [call], "toolResults": [result], "assistant_message": "a"})
    assert camel[1:3] == flat[1:3]  # Starcode's own builder reads payload.toolResults
    chat = turn_messages({"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": None, "tool_calls": [call]},
                                       {"role": "tool", "content": "print(1)"}, {"role": "assistant", "content": "it prints 1"}]})
    assert json.loads(chat[1]["content"]) == [call]


def test_the_driver_makes_no_telemetry_row_a_task_per_events_file_stages_them(events_lake, tmp_path, monkeypatch):
    # the build's driver made every event's rows in one loop and held them all: 650 MB and 17 s of every build at 60,000
    # events, rebuilt each time; it now gets only their keys, and a Ray task per file makes and stages that file's rows
    from pipelines.build import event_rows, event_stage

    lake, org, other = events_lake

    def refuse(*args, **kwargs):
        raise AssertionError("the driver made telemetry rows")

    monkeypatch.setattr(event_stage, "event_rows", refuse)  # the Ray workers import their own copy
    monkeypatch.setattr(event_rows, "event_rows", refuse)
    stage = tmp_path / "_stage"
    sessions, section = event_stage.stage_events(settings_for(lake), lake, stage, "b1", org=None, forgotten=set())
    assert (section["events"], section["sft_rows"], section["behavior_rows"], section["unusable_turns"]) == (6, 2, 2, 1)
    assert sessions == {(f"telemetry:{org}:s1", "b1"), (f"telemetry:{other}:b1", "b1")}  # each with the build that staged its rows
    staged = sorted(str(path.relative_to(stage)) for path in stage.rglob(f"*{event_rows.TELEMETRY_SUFFIX}"))
    files = event_rows.event_files(lake)
    turns, errors, behaviours = (files.index(next(f for f in files if f"type={kind}/" in f)) for kind in ("conversation.turn", "model.error", "model.behavior"))
    assert staged == sorted([f"sft/b1-b{turns:06d}{event_rows.TELEMETRY_SUFFIX}", f"behavior/b1-b{errors:06d}{event_rows.TELEMETRY_SUFFIX}",
                             f"behavior/b1-b{behaviours:06d}{event_rows.TELEMETRY_SUFFIX}"])


def test_an_event_stored_again_in_a_later_file_or_line_is_a_repeat_there():
    from pipelines.build.event_stage import repeats

    a, b, c = (bytes([value]) * 16 for value in (1, 2, 3))
    assert repeats([a + b + a, c + b, b""], [np.array([1, 2, 5]), np.array([1, 3]), np.array([], dtype=np.int64)]) == [{5}, {3}, set()]
