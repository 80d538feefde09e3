"""`pipelines.lake_stats`, `trajforge stats` and `notebooks/lake.ipynb` over a small build written here.

The build has 24 sessions, session i with: tier A for i < 6, B for i < 16, C after; score 10*i; quality
100 - i; i + 1 steps and 100*(i + 1) tokens; model `claude` for even i, `gpt` for odd; domain backend for
i < 12, frontend for i < 20, none after; source ingest for i < 20, teacher after. Sessions 16..23 are
excluded (3 too_few_steps, 2 no_actions, 1 too_short, 2 unverified). Email redactions: 2 in each of
sessions 0, 5, 10, 15, 20 and 1 in sessions 1 and 2, which also hold one AWS key each.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import lake_stats
from trajforge.contracts.curated import BEHAVIOR, DUPLICATES, SFT, TRAJECTORIES
from trajforge.errors import TrajforgeError
from trajforge.lake import sha256_of

REPO = Path(__file__).resolve().parents[2]
BUILD_ID = "b-20250101T000000-test"
EXCLUDED = {16: "too_few_steps", 17: "too_few_steps", 18: "too_few_steps", 19: "no_actions", 20: "no_actions", 21: "too_short", 22: "unverified", 23: "unverified"}
# too_short is 2 in the manifest on purpose, to show a disagreement with the rows (which hold 1).
MANIFEST_EXCLUSIONS = {"too_few_steps": 3, "no_actions": 2, "no_observations": 0, "insufficient_tokens": 0, "too_short": 2}


def _trajectory(i: int) -> dict:
    redactions = [{"kind": "email", "count": 2}] if i % 5 == 0 else []
    if i in (1, 2):
        redactions = [{"kind": "aws_access_key", "count": 1}, {"kind": "email", "count": 1}]
    return {
        "session_id": f"s{i:02d}", "source": "ingest" if i < 20 else "teacher", "model_engine": "claude" if i % 2 == 0 else "gpt",
        "tier": "TIER_A" if i < 6 else "TIER_B" if i < 16 else "TIER_C", "score": 10.0 * i, "quality": 100 - i,
        "total_steps": i + 1, "total_tokens": 100 * (i + 1), "domain": "backend" if i < 12 else "frontend" if i < 20 else None,
        "training_eligible": i not in EXCLUDED, "exclusion_reason": EXCLUDED.get(i), "redactions": redactions,
    }


def _sft(i: int) -> dict:
    return {"example_id": f"e{i:02d}", "session_id": f"s{i:02d}", "split": "dev" if i % 8 == 0 else "train",
            "tier": "TIER_A" if i < 6 else "TIER_B", "num_tokens": 100 * (i + 1), "loss_tokens": 50 * (i + 1)}


def _write(folder: Path, rows: list[dict], schema: pa.Schema, parts: int = 1) -> dict:
    folder.mkdir(parents=True)
    files = []
    for part in range(parts):
        path = folder / f"part-{part:05d}.parquet"
        pq.write_table(pa.Table.from_pylist(rows[part::parts], schema=schema), path)
        files.append({"path": f"{folder.name}/{path.name}", "rows": len(rows[part::parts]), "bytes": path.stat().st_size, "sha256": sha256_of(path)})
    return files


def write_build(lake: Path, build_id: str = BUILD_ID) -> Path:
    build = lake / "curated" / build_id
    behavior = [("model_error", "error_recovered", True)] * 3 + [("model_error", "error_unrecovered", False)] + [("behavior", "correction", None)] * 2
    files = [
        *_write(build / "trajectories", [_trajectory(i) for i in range(24)], TRAJECTORIES, parts=2),
        *_write(build / "sft", [_sft(i) for i in range(16)], SFT),
        *_write(build / "behavior", [{"row_id": f"r{n}", "kind": k, "behavior": b, "recovered": r} for n, (k, b, r) in enumerate(behavior)], BEHAVIOR),
        *_write(build / "duplicates", [{"dropped_session_id": f"d{n}", "kept_session_id": "s00", "kind": kind, "similarity": similarity}
                                       for n, (kind, similarity) in enumerate([("exact", 1.0), ("exact", 1.0), ("near", 0.9)])], DUPLICATES),
    ]
    manifest = {
        "build_id": build_id, "parent_build_id": None, "created_at": "2025-01-01T00:00:00Z", "code_version": "abc1234",
        "config_hash": "cfg9", "tokenizer": "tok-test", "embedding": {"enabled": False, "model": None},
        "inputs": {"segments": 2, "trajectory_files": 1, "envelopes": 40, "records": 10},
        "sessions": {"built": 24, "reused": 0, "pending_open": 1},
        "rows": {"trajectories": 24, "sft": 16, "behavior": 6, "duplicates": 3},
        "tiers": {"TIER_A": 6, "TIER_B": 10, "TIER_C": 8}, "exclusions": MANIFEST_EXCLUSIONS,
        "redactions": {"email": 12, "aws_access_key": 2, "phone": 0}, "dedup": {"exact": 2, "near": 1},
        "telemetry": {"events": 6, "duplicates": 1, "left_out": 0, "unusable_turns": 0, "sft_rows": 3, "behavior_rows": 2,
                      "redactions": {"aws_access_key": 1, "email": 2}},
        "quarantine": {"count": 1, "records": [{"source": "envelopes", "path": "raw/x.seg", "offset": 10, "length": 5, "reason": "torn tail"}]},
        "files": files,
    }
    (build / "manifest.json").write_text(json.dumps(manifest))
    (lake / "curated" / "LATEST").write_text(build_id + "\n")
    return build


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("stats") / "lake"
    write_build(root)
    return root


@pytest.fixture(scope="module")
def build(lake) -> Path:
    return lake / "curated" / BUILD_ID


def test_tiers(build):
    assert lake_stats.tiers(build) == [
        {"tier": "TIER_A", "sessions": 6, "share": 0.25, "mean_score": 25.0, "mean_quality": 97.5},
        {"tier": "TIER_B", "sessions": 10, "share": round(10 / 24, 4), "mean_score": 105.0, "mean_quality": 89.5},
        {"tier": "TIER_C", "sessions": 8, "share": round(8 / 24, 4), "mean_score": 195.0, "mean_quality": 80.5},
    ]


def test_model_engines_domains_sources(build):
    assert lake_stats.model_engines(build) == [
        {"model_engine": "claude", "sessions": 12, "steps": 144, "tokens": 14400, "mean_score": 110.0, "tier_a_share": 0.25},
        {"model_engine": "gpt", "sessions": 12, "steps": 156, "tokens": 15600, "mean_score": 120.0, "tier_a_share": 0.25},
    ]
    assert lake_stats.domains(build) == [
        {"domain": "backend", "sessions": 12, "share": 0.5, "mean_score": 55.0},
        {"domain": "frontend", "sessions": 8, "share": round(8 / 24, 4), "mean_score": 155.0},
        {"domain": None, "sessions": 4, "share": round(4 / 24, 4), "mean_score": 215.0},
    ]
    assert lake_stats.sources(build) == [
        {"source": "ingest", "sessions": 20, "eligible": 16, "steps": 210, "mean_score": 95.0},
        {"source": "teacher", "sessions": 4, "eligible": 0, "steps": 90, "mean_score": 215.0},
    ]


def test_exclusions_and_redactions_beside_the_manifest(build):
    exclusions = lake_stats.exclusions(build)
    assert exclusions == [
        {"reason": "too_few_steps", "sessions": 3, "manifest": 3},
        {"reason": "no_actions", "sessions": 2, "manifest": 2},
        {"reason": "unverified", "sessions": 2, "manifest": None},
        {"reason": "too_short", "sessions": 1, "manifest": 2},
        {"reason": "insufficient_tokens", "sessions": 0, "manifest": 0},
        {"reason": "no_observations", "sessions": 0, "manifest": 0},
    ]
    assert lake_stats.disagreements(exclusions, "reason", "sessions") == ["too_short"]
    redactions = lake_stats.redactions(build)
    assert redactions == [
        {"kind": "email", "sessions": 7, "count": 12, "manifest": 12},
        {"kind": "aws_access_key", "sessions": 2, "count": 2, "manifest": 2},
        {"kind": "phone", "sessions": 0, "count": 0, "manifest": 0},
    ]
    assert lake_stats.disagreements(redactions, "kind", "count") == []


def test_telemetry_events_and_their_redactions_come_from_the_manifest(build, tmp_path):
    assert lake_stats.telemetry(build) == [
        {"item": "events", "count": 6}, {"item": "stored twice", "count": 1}, {"item": "left out (org filter, forgotten)", "count": 0},
        {"item": "turns without an answer", "count": 0}, {"item": "sft rows", "count": 3}, {"item": "behavior rows", "count": 2},
        {"item": "redacted: aws_access_key", "count": 1}, {"item": "redacted: email", "count": 2},
    ]
    without = write_build(tmp_path / "lake", "20250101T000000Z-2")  # a build from before telemetry: no section, no rows
    manifest = json.loads((without / "manifest.json").read_text())
    del manifest["telemetry"]
    (without / "manifest.json").write_text(json.dumps(manifest))
    assert lake_stats.telemetry(without) == []


def test_sft_behavior_duplicates_and_points(build):
    assert lake_stats.sft_splits(build) == [
        {"split": "train", "tier": "TIER_A", "rows": 5, "tokens": 2000, "loss_tokens": 1000},
        {"split": "train", "tier": "TIER_B", "rows": 9, "tokens": 10600, "loss_tokens": 5300},
        {"split": "dev", "tier": "TIER_A", "rows": 1, "tokens": 100, "loss_tokens": 50},
        {"split": "dev", "tier": "TIER_B", "rows": 1, "tokens": 900, "loss_tokens": 450},
    ]
    assert lake_stats.behaviors(build) == [
        {"kind": "behavior", "behavior": "correction", "rows": 2, "recovered": 0},
        {"kind": "model_error", "behavior": "error_recovered", "rows": 3, "recovered": 3},
        {"kind": "model_error", "behavior": "error_unrecovered", "rows": 1, "recovered": 0},
    ]
    assert lake_stats.duplicates(build) == [{"kind": "exact", "rows": 2, "mean_similarity": 1.0}, {"kind": "near", "rows": 1, "mean_similarity": 0.9}]
    points = lake_stats.session_points(build)
    assert points.num_rows == 24 and points.column("score").to_pylist()[:3] == [0.0, 10.0, 20.0]


def test_summary(build):
    summary = lake_stats.build_summary(build)
    assert summary["build_id"] == BUILD_ID and summary["created_at"] == "2025-01-01T00:00:00Z" and summary["quarantined"] == 1
    assert summary["rows"] == {"trajectories": 24, "sft": 16, "behavior": 6, "duplicates": 3} and summary["embedding_model"] is None


def test_a_table_without_parts_is_empty(build, tmp_path):
    copy = shutil.copytree(build, tmp_path / "copy")
    shutil.rmtree(copy / "duplicates")
    assert lake_stats.duplicates(copy) == [] and lake_stats.tiers(copy)[0]["sessions"] == 6


def _stats(argv: list[str]) -> int:
    from trajforge.cli import main

    if "stats" in main.COMMANDS:
        return main.main(["stats", *argv])
    from trajforge.cli import stats_cmd

    parser = argparse.ArgumentParser()
    stats_cmd.add_arguments(parser)
    try:
        return stats_cmd.run_command(parser.parse_args(argv))
    except TrajforgeError as exc:  # what main() does at the boundary
        print(f"trajforge stats: {exc}", file=sys.stderr)
        return 2


def test_cli_text(lake, capsys):
    assert _stats(["--lake", str(lake)]) == 0
    out = capsys.readouterr().out
    assert f"build       {BUILD_ID}" in out and "quarantined 1 record(s)" in out
    assert "sessions per tier\n  tier    sessions   share  mean_score  mean_quality\n" in out
    assert "  TIER_A         6    0.25        25.0          97.5\n" in out
    assert "  frontend         8  0.3333       155.0\n  -                4  0.1667       215.0\n" in out
    assert "note: exclusions counted from the rows differ from the manifest for: too_short" in out
    assert "redactions" not in out.split("note:")[1]


def test_cli_json(lake, capsys):
    assert _stats(["--lake", str(lake), "--build", BUILD_ID, "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["build"]["build_id"] == BUILD_ID and set(stats["tables"]) == set(lake_stats.TABLE_QUERIES)
    assert stats["tables"]["tiers"][0] == {"tier": "TIER_A", "sessions": 6, "share": 0.25, "mean_score": 25.0, "mean_quality": 97.5}


@pytest.mark.parametrize("as_json", [False, True])
def test_a_reader_that_closes_the_pipe_early_ends_it_quietly(lake, as_json):
    """`trajforge stats | head -2`: the reader here closes before the first line, so every write meets the closed pipe."""
    import subprocess

    command = [sys.executable, "-m", "trajforge.cli.main", "stats", "--lake", str(lake), *(["--json"] if as_json else [])]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    process.stdout.close()
    errors = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141 and errors == ""  # as a program SIGPIPE ended; no BrokenPipeError traceback


def test_no_build_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert _stats(["--lake", str(tmp_path / "empty")]) == 2
    assert "no build in" in capsys.readouterr().err


def test_a_lake_folder_that_does_not_exist_is_named_as_such(tmp_path, capsys):
    """It said to run `trajforge build --lake X` first, which then said X does not exist: two tries to learn of a wrong --lake."""
    assert _stats(["--lake", str(tmp_path / "typo")]) == 2
    assert capsys.readouterr().err.strip().endswith(f"no lake at {tmp_path / 'typo'} (the folder does not exist): pass --lake with the lake's folder")
    from trajforge.lake import Lake

    with pytest.raises(TrajforgeError, match="no build 'b-missing': .* does not exist"):
        Lake.at(tmp_path).resolve_build("b-missing")
    (tmp_path / "curated" / "b-torn").mkdir(parents=True)
    with pytest.raises(TrajforgeError, match="not a complete build"):
        Lake.at(tmp_path).resolve_build("b-torn")
    (tmp_path / "curated" / "LATEST.org=acme").write_text("b-acme\n")  # only --org builds: `latest` names them
    with pytest.raises(TrajforgeError, match="no build in .*name one of its --org builds: latest:acme$"):
        Lake.at(tmp_path).resolve_build("latest")


def test_a_missing_or_damaged_part_is_a_clear_error(lake, tmp_path, capsys):
    copy = shutil.copytree(lake, tmp_path / "lake")
    part = copy / "curated" / BUILD_ID / "trajectories" / "part-00000.parquet"
    part.unlink()
    assert _stats(["--lake", str(copy)]) == 2  # not tables that quietly count one part short
    assert "part-00000.parquet is listed in" in capsys.readouterr().err
    part.write_bytes(b"x" * (copy / "curated" / BUILD_ID / "trajectories" / "part-00001.parquet").stat().st_size)  # right size, not Parquet
    manifest = json.loads((copy / "curated" / BUILD_ID / "manifest.json").read_text())
    entry = next(item for item in manifest["files"] if item["path"] == "trajectories/part-00000.parquet")
    entry["bytes"] = part.stat().st_size
    (copy / "curated" / BUILD_ID / "manifest.json").write_text(json.dumps(manifest))
    assert _stats(["--lake", str(copy)]) == 2
    error = capsys.readouterr().err  # the damaged part named (by its sha256), not only the build folder DuckDB failed on
    assert "trajectories/part-00000.parquet does not match the sha256" in error and "rebuild with `trajforge build --full`" in error
    entry["sha256"] = sha256_of(part)  # a manifest that agrees with the damage: DuckDB's own reason, in printable characters
    (copy / "curated" / BUILD_ID / "manifest.json").write_text(json.dumps(manifest))
    assert _stats(["--lake", str(copy)]) == 2
    error = capsys.readouterr().err
    assert "cannot be read (" in error and "rebuild with `trajforge build --full`" in error and error.rstrip("\n").isprintable()
    part.write_bytes(b"x" * 10)
    assert _stats(["--lake", str(copy)]) == 2
    assert "part-00000.parquet has 10 bytes, the manifest says" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["{not json", "[]", '{"build_id": "b"}'])
def test_a_damaged_manifest_is_a_clear_error(lake, tmp_path, capsys, text):
    copy = shutil.copytree(lake, tmp_path / "lake")
    manifest = copy / "curated" / BUILD_ID / "manifest.json"
    manifest.write_text(text)
    assert _stats(["--lake", str(copy), "--json"]) == 2  # not a JSONDecodeError or AttributeError traceback
    captured = capsys.readouterr()
    assert captured.out == "" and f"{manifest} " in captured.err and "rebuild with `trajforge build`" in captured.err
    with pytest.raises(TrajforgeError, match="manifest.json"):  # the notebook's summary says the same
        lake_stats.build_summary(copy / "curated" / BUILD_ID)


def test_the_notebook_refuses_a_build_missing_a_part_as_the_cli_does(lake, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    copy = shutil.copytree(lake, tmp_path / "lake")
    (copy / "curated" / BUILD_ID / "sft" / "part-00000.parquet").unlink()
    monkeypatch.setenv("TRAJFORGE_LAKE", str(copy))
    notebook = nbformat.read(REPO / "notebooks" / "lake.ipynb", as_version=4)
    with pytest.raises(CellExecutionError, match="part-00000.parquet is listed in .* but missing"):  # not tables a part short
        NotebookClient(notebook, kernel_name="python3", timeout=60, resources={"metadata": {"path": str(REPO / "notebooks")}}).execute()


def test_notebook_runs_headless(lake, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("TRAJFORGE_LAKE", str(lake))
    monkeypatch.setenv("TRAJFORGE_BUILD", "latest")
    notebook = nbformat.read(REPO / "notebooks" / "lake.ipynb", as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), "commit the notebook with outputs cleared"
    NotebookClient(notebook, kernel_name="python3", timeout=60, resources={"metadata": {"path": str(REPO / "notebooks")}}).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    assert sum("image/png" in output.get("data", {}) for output in outputs) >= 3
