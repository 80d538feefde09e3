"""The build pipeline on a lake written through the real ingest service: rows, exclusions, scores,
redaction, dedup, quarantine, byte-identical reruns and incremental builds."""

from __future__ import annotations

import json
import logging
import shutil

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from build_lake import EXCLUSIONS, PLANTED, fill_phase_one, fill_phase_two

from pipelines.build import load_build_settings, run_build
from trajforge.cli.build_cmd import summary
from trajforge.client import contributor_id_for
from trajforge.errors import ConfigError, TrajforgeError
from trajforge.lake import Lake

pytestmark = pytest.mark.usefixtures("serve_url")


def settings_for(lake, **overrides):
    assignments = [("build.lake", str(lake)), ("build.cpus_per_task", 0.05), ("build.embedding.cpus", 0.05), ("build.sessions_per_batch", 4),
                   ("build.open_session_grace_s", 3600), ("build.embedding.enabled", False)]
    return load_build_settings(assignments=assignments + [(f"build.{key}", value) for key, value in overrides.items()])


@pytest.fixture(scope="module")
def phase_one(serve_url, lakes, tmp_path_factory):
    """The served lake after phase one, copied (so later phases do not change it), with the session ids."""
    ids, points = fill_phase_one(f"{serve_url}/build", lakes["build"])
    copy = tmp_path_factory.mktemp("phase-one") / "lake"
    shutil.copytree(lakes["build"], copy)
    return copy, ids, points


@pytest.fixture(scope="module")
def built(phase_one, tmp_path_factory):
    """Phase one built once, with embeddings."""
    lake, ids, points = phase_one
    copy = tmp_path_factory.mktemp("built") / "lake"
    shutil.copytree(lake, copy)
    manifest = run_build(settings_for(copy, **{"embedding.enabled": True}), progress=False)
    return Lake.at(copy).build_dir(manifest["build_id"]), manifest, ids, points


def table(build_dir, name):
    return duckdb.sql(f"SELECT * FROM read_parquet('{build_dir / name}/*.parquet')").to_arrow_table().to_pylist()


def by_session(rows):
    return {row["session_id"]: row for row in rows}


def test_every_exclusion_reason_is_derived_from_the_steps(built):
    build_dir, manifest, ids, _ = built
    rows = by_session(table(build_dir, "trajectories"))
    for reason in EXCLUSIONS:
        row = rows[ids[reason]]
        assert (row["training_eligible"], row["exclusion_reason"]) == (False, reason)
    assert rows[ids["eligible"]]["training_eligible"] and rows[ids["eligible"]]["exclusion_reason"] is None
    assert rows[ids["10_crash_django_upgrade_oom"]]["exclusion_reason"] == "too_few_steps"
    assert set(EXCLUSIONS) <= set(manifest["exclusions"]) and manifest["exclusions"]["too_few_steps"] >= 2


def test_tiers_and_outcome_come_from_the_steps_not_the_client(built):
    build_dir, _, ids, _ = built
    rows = by_session(table(build_dir, "trajectories"))
    eligible = rows[ids["eligible"]]  # resolution, no errors: 50 + 20 + 10
    assert (eligible["quality"], eligible["tier"], eligible["tier_reason"], eligible["outcome"]) == (80, "TIER_A", "high_quality_no_errors", "resolved")
    crash = rows[ids["10_crash_django_upgrade_oom"]]
    assert crash["reported_status"] == "CRASH" and crash["outcome"] != "resolved" and crash["tier"] != "TIER_A"


def test_scores_match_the_ingest_ledger_and_the_formula(built):
    build_dir, _, ids, points = built
    rows = by_session(table(build_dir, "trajectories"))
    for name, credited in points.items():
        if ids[name] in rows:
            assert rows[ids[name]]["score"] == pytest.approx(credited), name
    # 6 steps, gpt-5.5 (x5), one resolution: 6 * 5 = 30, quality bonus floor(3.0) = 3
    assert rows[ids["eligible"]]["score"] == 33
    assert json.loads(rows[ids["eligible"]]["score_breakdown"])["quality_bonus"] == 3


def test_stitching_orders_chunks_and_flags_gaps_and_duplicates(built):
    build_dir, _, ids, _ = built
    row = by_session(table(build_dir, "trajectories"))[ids["chunky"]]
    assert row["missing_chunks"] == [1] and row["duplicate_steps"] == [3] and row["total_chunks"] == 2 and row["total_steps"] == 8
    assert ids["open"] not in by_session(table(build_dir, "trajectories"))


def test_planted_secrets_never_reach_the_curated_tables(built):
    build_dir, manifest, ids, _ = built
    text = "".join(path.read_bytes().decode("latin-1") for path in build_dir.rglob("*.parquet") if "_stage" not in path.parts)
    dumped = json.dumps([table(build_dir, name) for name in ("trajectories", "sft", "behavior")], default=str)
    for value in PLANTED:
        assert value not in dumped and value not in text, value
    row = by_session(table(build_dir, "trajectories"))[ids["04_terraform_eks_nodegroup_planted_secrets"]]
    kinds = {item["kind"] for item in row["redactions"]}
    assert {"aws_access_key", "github_token", "email", "ip_address"} <= kinds
    assert manifest["redactions"]["email"] >= 2 and "[REDACTED:EMAIL]" in dumped


def test_duplicates_keep_the_best_scored_copy(built):
    build_dir, manifest, ids, _ = built
    dropped = {row["dropped_session_id"]: row for row in table(build_dir, "duplicates")}
    exact = dropped[ids["02_copy"]]
    assert (exact["kind"], exact["kept_session_id"], exact["similarity"]) == ("exact", ids["02_fastapi_pagination_bugfix"], 1.0)
    pair = {ids["06_vue_date_range_picker_fix"], ids["07_vue_date_range_picker_fix_rerun"]}
    near = [row for row in dropped.values() if row["kind"] == "near"]
    assert len(near) == 1 and {near[0]["dropped_session_id"], near[0]["kept_session_id"]} == pair
    assert near[0]["kept_score"] >= near[0]["dropped_score"] and near[0]["similarity"] >= 0.8
    kept = by_session(table(build_dir, "trajectories"))
    assert near[0]["dropped_session_id"] not in kept and ids["02_copy"] not in kept
    assert manifest["dedup"] == {"exact": 1, "near": 1}


def test_sft_rows_are_chats_with_loss_on_the_assistant_turns(built):
    build_dir, _, ids, _ = built
    rows = table(build_dir, "sft")
    trajectories = by_session(table(build_dir, "trajectories"))
    for row in rows:
        session = trajectories[row["session_id"]]
        assert session["training_eligible"] and row["split"] in ("train", "dev")
        assert all(message["loss"] == (message["role"] == "assistant") for message in row["messages"])
        assert row["num_tokens"] > row["loss_tokens"] > 0
    field = {row["session_id"]: row for row in rows if row["source"] == "ingest"}
    assert ids["eligible"] in field and ids["too_short"] not in field
    assert field[ids["eligible"]]["messages"][0]["role"] == "system" and field[ids["eligible"]]["messages"][1]["role"] == "user"
    team = field[ids["08_team_backend_notifications_sse"]]["messages"]  # its teammate's replies are not the model's to learn
    heard = [message for message in team if "← frontend-2:" in message["content"]]
    assert heard and all(message["role"] == "user" and not message["loss"] and "→ frontend-2" not in message["content"] for message in heard)
    assert any(message["loss"] and "→ frontend-2" in message["content"] for message in team)
    teacher = [row for row in rows if row["source"] == "teacher"]
    assert [(row["session_id"], row["step"]) for row in teacher] == [("teacher:task-solved:run-1", 2)]
    # the trajectory store's step as Parquet with its reward columns and sampling (seed 002 section 7)
    assert teacher[0]["reward"] == {"verified": True, "matches_gold": True, "tests_pass": None}
    assert (teacher[0]["model"], teacher[0]["temperature"], teacher[0]["seed"]) == ("oracle", 0.7, 2)
    assert all(row["reward"] is None and row["model"] is None for row in field.values())
    assert teacher[0]["messages"][-1]["content"].startswith("<think>") and "</action>" in teacher[0]["messages"][-1]["content"]
    assert "ops@example.org" not in json.dumps(teacher[0]["messages"])


def test_behavior_rows_and_provenance(built):
    build_dir, _, ids, _ = built
    behavior = table(build_dir, "behavior")
    kinds = {(row["session_id"], row["behavior"]) for row in behavior}
    assert ("teacher:task-solved:run-1", "sandbox_failure") in kinds and ("teacher:task-failed:run-2", "malformed_output") in kinds
    assert (ids["01_react_vite_scaffold"], "error_recovered") in kinds
    row = by_session(table(build_dir, "trajectories"))[ids["01_react_vite_scaffold"]]
    provenance = row["provenance"]
    assert provenance["source"] == "ingest" and provenance["contributor_id"] == contributor_id_for("alice")
    assert "3f2a9c1" in provenance["commits"] and provenance["files"] and len(provenance["raw_ids"]) == row["total_chunks"] + 2  # chunks, close, feedback


def test_embeddings_domains_and_the_manifest(built):
    build_dir, manifest, ids, _ = built
    rows = by_session(table(build_dir, "trajectories"))
    react = rows[ids["01_react_vite_scaffold"]]
    assert len(react["embedding"]) == 384 and react["domain"] == "react_frontend"
    tags = react["domain_tags"]  # seed 004's domain_tags object, with the method that made it
    assert set(tags) == {"primary", "secondary", "tertiary", "method"} and tags["method"] == "embedding"
    assert tags["primary"]["domain"] == "react_frontend" and 1 >= tags["primary"]["confidence"] >= tags["secondary"]["confidence"] >= tags["tertiary"]["confidence"] >= 0
    assert manifest["embedding"]["enabled"] and manifest["sessions"]["pending_open"] == 1
    assert manifest["rows"]["trajectories"] == len(rows) and manifest["quarantine"]["count"] == 1
    assert manifest["quarantine"]["records"][0]["reason"] == "not JSON"
    from pipelines.build.output import sha256_of

    for entry in manifest["files"]:
        assert sha256_of(build_dir / entry["path"]) == entry["sha256"]
        assert pq.read_metadata(build_dir / entry["path"]).num_rows == entry["rows"]
    assert Lake.at(build_dir.parents[1]).latest_build_id() == manifest["build_id"]


def test_the_manifest_lists_every_file_of_the_build_with_its_sha256(built):
    build_dir, manifest, _, _ = built
    listed = {entry["path"]: entry for entry in manifest["files"] + manifest["staging"]}
    on_disk = {path.relative_to(build_dir).as_posix() for path in build_dir.rglob("*") if path.is_file()} - {"manifest.json"}
    assert on_disk == set(listed) and any(path.startswith("_stage/") for path in on_disk)
    from pipelines.build.output import sha256_of

    for path, entry in listed.items():
        assert (build_dir / path).stat().st_size == entry["bytes"] and sha256_of(build_dir / path) == entry["sha256"], path


def _hashes(manifest):
    return {entry["path"]: entry["sha256"] for entry in manifest["files"]}


def test_reruns_are_byte_identical_and_incremental_builds_match_full_ones(phase_one, serve_url, lakes, tmp_path):
    lake, _, _ = phase_one
    first_lake = tmp_path / "first"
    shutil.copytree(lake, first_lake)
    first = run_build(settings_for(first_lake), full=True, progress=False)
    again = run_build(settings_for(first_lake), full=True, progress=False)
    assert _hashes(first) == _hashes(again) and first["build_id"] != again["build_id"]

    later = fill_phase_two(f"{serve_url}/build")
    second_lake = tmp_path / "second"
    shutil.copytree(lakes["build"], second_lake, ignore=shutil.ignore_patterns("curated"))
    shutil.copytree(first_lake / "curated", second_lake / "curated")
    incremental = run_build(settings_for(second_lake), progress=False)
    assert incremental["parent_build_id"] == again["build_id"]
    assert incremental["sessions"]["built"] == len(later) and incremental["sessions"]["reused"] == first["sessions"]["ready"]
    full = run_build(settings_for(second_lake), full=True, progress=False)
    assert full["sessions"]["built"] == full["sessions"]["ready"] == incremental["sessions"]["ready"]
    assert _hashes(incremental) == _hashes(full)


def test_a_corrupt_segment_is_quarantined_and_the_build_goes_on(phase_one, tmp_path):
    lake, ids, _ = phase_one
    copy = tmp_path / "lake"
    shutil.copytree(lake, copy)
    segment = max((copy / "raw" / "envelopes").rglob("*.seg"), key=lambda path: path.stat().st_size)
    data = bytearray(segment.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = b"\xff" * 64
    segment.write_bytes(bytes(data))
    manifest = run_build(settings_for(copy), progress=False)
    reasons = [record["reason"] for record in manifest["quarantine"]["records"]]
    assert "damaged bytes between valid frames" in reasons and "not JSON" in reasons
    assert manifest["rows"]["trajectories"] >= len(ids) - 5


def test_a_file_torn_without_a_writer_is_listed_and_one_being_written_is_not(phase_one, tmp_path):
    from trajforge.raw_segments import SegmentWriter, encode_frame
    from trajforge.trajectories import TrajectoryWriter

    lake, _, _ = phase_one
    copy = tmp_path / "lake"
    shutil.copytree(lake, copy)
    folder = next((copy / "raw" / "envelopes").glob("date=*"))
    (folder / "crashed-0001.seg").write_bytes(b"not a frame at all " * 20)  # damaged throughout: a torn tail from byte 0
    steps = copy / "raw" / "trajectories"
    crashed_line = b'{"task_id": "t", "step": 1, "prompt": {}, "state_before": {}, "model_output": {}, "sandbox_result": {}, "reward": null}\n'
    (steps / "actor0-crashed.jsonl").write_bytes(crashed_line + b'{"task_id": "t", "st')  # its writer died mid-line
    live = SegmentWriter(folder / "live-0001.seg")  # holds the lock, as the ingest service's writer does
    steps_writer = TrajectoryWriter(steps, "actor1")  # holds its file's lock from its first record, as an actor's does
    try:
        frame = encode_frame({"session_id": "s", "kind": "CHUNK", "envelope_id": "env_x"}, b"{}")
        live.append([frame, frame[:10]])  # a whole frame, then the start of one being written
        steps_writer.append(json.loads(crashed_line))
        with open(steps_writer.path, "ab") as handle:
            handle.write(b'{"task_id": "t", "step": 2')  # a line being written
        manifest = run_build(settings_for(copy), progress=False)
    finally:
        live.close()
        steps_writer.close()
    torn = [(r["path"].rsplit("/", 1)[1], r["offset"], r["length"]) for r in manifest["quarantine"]["records"] if r["reason"].startswith("torn tail")]
    assert sorted(torn) == [("actor0-crashed.jsonl", len(crashed_line), 20), ("crashed-0001.seg", 0, 380)]
    assert manifest["inputs"]["torn_tail_bytes"] == 380 + 10 + 20 + 26


def test_org_filter_keeps_only_the_orgs_contributors(phase_one, tmp_path, caplog):
    lake, ids, _ = phase_one
    copy = tmp_path / "lake"
    shutil.copytree(lake, copy)
    alice = contributor_id_for("alice")
    caplog.set_level(logging.INFO, logger="pipelines.build.job")
    manifest = run_build(settings_for(copy, orgs={"acme": [alice]}), org="acme", progress=False)
    (counts,) = [record.getMessage() for record in caplog.records if "sessions ready" in record.getMessage()]
    assert ", 0 still open, " in counts and f"{manifest['sessions']['other_orgs']} of other organizations left out" in counts
    rows = table(Lake.at(copy).build_dir(manifest["build_id"]), "trajectories")
    assert rows and {row["contributor_id"] for row in rows} == {alice} and manifest["org"] == "acme"
    sessions = manifest["sessions"]  # the lake's one open session is not alice's; the others' sessions are not "still open"
    assert sessions["pending_open"] == 0 and sessions["ready"] + sessions["other_orgs"] == len(ids) + 2  # + the two teacher runs
    assert f"{sessions['other_orgs']} of other organizations left out" in summary(manifest)
    with pytest.raises(ConfigError, match="neither in build.orgs"):
        run_build(settings_for(copy), org="nobody", progress=False)


def test_an_org_build_in_between_does_not_make_the_next_build_full(phase_one, tmp_path):
    lake, ids, _ = phase_one
    copy = tmp_path / "lake"
    shutil.copytree(lake, copy)
    orgs = {"acme": [contributor_id_for("alice")]}
    first = run_build(settings_for(copy, orgs=orgs), progress=False)
    acme = run_build(settings_for(copy, orgs=orgs), org="acme", progress=False)
    store = Lake.at(copy)  # `latest` stays the whole lake's build; `latest:acme` names the organisation's
    assert store.resolve_build("latest").name == first["build_id"] and store.resolve_build("latest:acme").name == acme["build_id"]
    with pytest.raises(TrajforgeError, match=r"no --org other build .*--org other` first"):
        store.resolve_build("latest:other")
    again = run_build(settings_for(copy, orgs={**orgs, "globex": [contributor_id_for("bob")]}), progress=False)  # an org list edited
    assert again["parent_build_id"] == first["build_id"] and again["sessions"]["built"] == 0
    assert again["sessions"]["reused"] == first["sessions"]["ready"] and _hashes(again) == _hashes(first)


def test_the_config_hash_follows_only_the_contributor_list_of_the_org_a_build_filters_by():
    settings = load_build_settings(None, [("build.orgs", {"acme": ["a" * 32]})])
    edited = settings.model_copy(update={"orgs": {"acme": ["a" * 32], "globex": ["b" * 32]}})
    grown = settings.model_copy(update={"orgs": {"acme": ["a" * 32, "c" * 32]}})
    assert settings.content_hash() == edited.content_hash() == grown.content_hash()  # a whole-lake build reads no org list
    assert settings.content_hash("acme") == edited.content_hash("acme") != grown.content_hash("acme")
    assert settings.content_hash("acme") != settings.content_hash()
    dedup = settings.model_copy(update={"dedup": settings.dedup.model_copy(update={"threshold": 0.5})})
    assert dedup.content_hash() != settings.content_hash()  # what changes rows still changes the hash


def test_telemetry_redact_false_turns_redaction_off_as_in_starcode(monkeypatch):
    assert load_build_settings(None, []).redaction.kinds  # on by default
    monkeypatch.setenv("TELEMETRY_REDACT", "false")
    assert load_build_settings(None, []).redaction.kinds == []
    assert load_build_settings(None, [("build.redaction.kinds", ["email"])]).redaction.kinds == ["email"]  # --set still wins
    monkeypatch.setenv("TELEMETRY_REDACT", "true")
    assert load_build_settings(None, []).redaction.kinds
    monkeypatch.setenv("TELEMETRY_REDACT", "sometimes")
    with pytest.raises(ConfigError, match="TELEMETRY_REDACT='sometimes' is neither true nor false"):
        load_build_settings(None, [])


def test_rows_an_older_version_derived_are_not_reused(monkeypatch):
    import pipelines.build.settings as build_settings

    settings = load_build_settings(None, [])
    before = settings.content_hash()
    monkeypatch.setattr(build_settings, "ROWS_VERSION", build_settings.ROWS_VERSION + 1)  # a rule of derivation changed
    assert settings.content_hash() != before
    monkeypatch.undo()
    grown = {**build_settings.SCHEMAS, "sft": build_settings.SCHEMAS["sft"].append(pa.field("new_column", pa.string()))}
    monkeypatch.setattr(build_settings, "SCHEMAS", grown)  # a column added
    assert settings.content_hash() != before


def test_a_tokenizer_folder_counts_in_the_config_hash_by_its_content_not_its_path(tmp_path):
    import shutil as files

    from trajforge.embedding import resolve_model

    first, moved = tmp_path / "a" / "tok", tmp_path / "b" / "tok"
    files.copytree(resolve_model("packaged"), first)
    files.copytree(first, moved)
    settings = load_build_settings(None, [("build.tokenizer", str(first))])
    assert settings.content_hash() == settings.model_copy(update={"tokenizer": str(moved)}).content_hash()
    (moved / "tokenizer.json").write_text((moved / "tokenizer.json").read_text().replace('"[UNK]"', '"[UNKNOWN]"'))
    assert settings.content_hash() != settings.model_copy(update={"tokenizer": str(moved)}).content_hash()  # retrained in place
    assert settings.model_copy(update={"tokenizer": "packaged"}).content_hash() != settings.content_hash()


def test_a_forgotten_contributor_leaves_every_later_build(phase_one, tmp_path):
    from trajforge import tombstones

    lake, _, _ = phase_one
    copy = tmp_path / "lake"
    shutil.copytree(lake, copy)
    first = run_build(settings_for(copy), full=True, progress=False)
    grace = contributor_id_for("grace")
    first_dir = Lake.at(copy).build_dir(first["build_id"])
    held = [row["session_id"] for row in table(first_dir, "trajectories") if row["contributor_id"] == grace]
    assert held and tombstones.builds_holding(Lake.at(copy), grace) == [first["build_id"]]

    tombstones.forget(Lake.at(copy), grace.upper(), reason="ticket 42")  # ids match whatever their case
    later = run_build(settings_for(copy), progress=False)  # not --full: it must still not reuse staged rows of grace
    assert later["parent_build_id"] is None and later["sessions"]["forgotten"] == len(held)
    assert later["forgotten"]["contributors"] == 1 and later["sessions"]["ready"] == first["sessions"]["ready"] - len(held)
    later_dir = Lake.at(copy).build_dir(later["build_id"])
    for name in ("trajectories", "sft", "behavior"):
        assert not {row["session_id"] for row in table(later_dir, name)} & set(held)
    staged = duckdb.sql(f"SELECT session_id FROM read_parquet('{later_dir / '_stage' / 'trajectories'}/*.parquet')").fetchall()
    assert not {row[0] for row in staged} & set(held)  # nothing of grace is carried into the next incremental build either
    assert tombstones.builds_holding(Lake.at(copy), grace) == [first["build_id"]]
    again = run_build(settings_for(copy), progress=False)  # the same tombstones: incremental again
    assert again["parent_build_id"] == later["build_id"] and _hashes(again) == _hashes(later)


def test_the_help_says_what_a_build_writes(capsys):
    from trajforge.cli.main import main

    with pytest.raises(SystemExit):
        main(["build", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "<lake>/curated/<build id>/" in text and "manifest.json" in text and "Without --full it builds only" in text
    from trajforge.contracts.curated import TABLES

    written = text.split("<lake>/curated/<build id>/:", 1)[1].split("tables as Parquet", 1)[0]
    assert [name for name in TABLES if name not in written] == []  # the provenance table was left out


def test_builds_started_in_the_same_second_get_their_own_ids_and_folders(tmp_path):
    from pipelines.build.job import claim_build_id

    lake = Lake.at(tmp_path / "lake")
    first, first_work = claim_build_id(lake)
    first_work.rename(lake.build_dir(first))
    claimed = [claim_build_id(lake) for _ in range(3)]
    ids = [first] + [build_id for build_id, _ in claimed]
    assert len(set(ids)) == 4
    assert all(work.is_dir() and work.name == f".{build_id}.partial" for build_id, work in claimed)
