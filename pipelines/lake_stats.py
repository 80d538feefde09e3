"""What a curated build holds, asked of its Parquet files with DuckDB: the one implementation behind
`trajforge stats` and `notebooks/lake.ipynb`.

Each table function takes a build folder (`Lake.resolve_build` finds it) and returns a list of plain dicts,
ready for JSON, a text table or a DataFrame. Means are rounded to 2 decimals and shares to 4. Where the
manifest also counts something (exclusions, redactions), the row carries the manifest's figure beside the
one counted from the rows, so a disagreement shows instead of being hidden.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trajforge.contracts.curated import SCHEMAS, TABLES
from trajforge.lake import check_listed_file, read_build_manifest

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

Rows = list[dict[str, Any]]


def manifest(build_dir: str | Path) -> dict[str, Any]:
    return read_build_manifest(Path(build_dir))


def check_files(build_dir: str | Path, *, checksum: bool = False) -> None:
    """Every file the build's manifest lists is there at its size (with `checksum`, at its sha256 too), else a LakeCorruption
    naming it: a table that lost a part would count short without a word. `trajforge stats` and the notebook check this
    before they query. Sizes only by default: hashing every file on each run costs a full read."""
    for entry in manifest(build_dir)["files"]:
        check_listed_file(Path(build_dir), entry, checksum=checksum)


def connect(build_dir: str | Path) -> "duckdb.DuckDBPyConnection":
    """An in-memory DuckDB with one view per curated table over the build's Parquet parts.

    A table the build wrote no part for (no duplicates, say) becomes an empty view of its schema,
    so every query below works on every build.
    """
    import duckdb

    con = duckdb.connect()
    for table in TABLES:
        folder = Path(build_dir) / table
        if any(folder.glob("*.parquet")):
            glob = str(folder / "*.parquet").replace("'", "''")
            con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{glob}')")
        else:
            con.register(f"_{table}_empty", SCHEMAS[table].empty_table())
            con.execute(f"CREATE VIEW {table} AS SELECT * FROM _{table}_empty")
    return con


def _rows(build_dir: str | Path, sql: str) -> Rows:
    with connect(build_dir) as con:
        relation = con.sql(sql)
        return [dict(zip(relation.columns, values)) for values in relation.fetchall()]


def build_summary(build_dir: str | Path) -> dict[str, Any]:
    """The manifest's headline: which build, when, from what code, how many rows, what was quarantined."""
    found = manifest(build_dir)
    embedding = found.get("embedding") or {}
    return {
        "build_id": found.get("build_id"),
        "parent_build_id": found.get("parent_build_id"),
        "created_at": found.get("created_at"),
        "code_version": found.get("code_version"),
        "config_hash": found.get("config_hash"),
        "tokenizer": found.get("tokenizer"),
        "embedding_model": embedding.get("model") if embedding.get("enabled") else None,
        "path": str(Path(build_dir).resolve()),
        "rows": found.get("rows", {}),
        "sessions": found.get("sessions", {}),
        "dedup": found.get("dedup", {}),
        "quarantined": (found.get("quarantine") or {}).get("count", 0),
    }


def tiers(build_dir: str | Path) -> Rows:
    return _rows(build_dir, """
        SELECT tier, count(*) AS sessions, round(count(*) / sum(count(*)) OVER (), 4) AS share,
               round(avg(score), 2) AS mean_score, round(avg(quality), 2) AS mean_quality
        FROM trajectories GROUP BY tier ORDER BY tier NULLS LAST""")


def model_engines(build_dir: str | Path) -> Rows:
    return _rows(build_dir, """
        SELECT model_engine, count(*) AS sessions, sum(total_steps)::BIGINT AS steps, sum(total_tokens)::BIGINT AS tokens,
               round(avg(score), 2) AS mean_score, round(avg((tier = 'TIER_A')::INT), 4) AS tier_a_share
        FROM trajectories GROUP BY model_engine ORDER BY sessions DESC, model_engine NULLS LAST""")


def domains(build_dir: str | Path) -> Rows:
    return _rows(build_dir, """
        SELECT domain, count(*) AS sessions, round(count(*) / sum(count(*)) OVER (), 4) AS share,
               round(avg(score), 2) AS mean_score
        FROM trajectories GROUP BY domain ORDER BY sessions DESC, domain NULLS LAST""")


def sources(build_dir: str | Path) -> Rows:
    return _rows(build_dir, """
        SELECT source, count(*) AS sessions, count(*) FILTER (training_eligible) AS eligible,
               sum(total_steps)::BIGINT AS steps, round(avg(score), 2) AS mean_score
        FROM trajectories GROUP BY source ORDER BY sessions DESC, source NULLS LAST""")


def exclusions(build_dir: str | Path) -> Rows:
    """Ineligible sessions per reason, beside the manifest's count (None where the manifest has no such reason)."""
    counted = {row["reason"]: row["sessions"] for row in _rows(build_dir, """
        SELECT coalesce(exclusion_reason, 'unspecified') AS reason, count(*) AS sessions
        FROM trajectories WHERE NOT training_eligible GROUP BY 1""")}
    return _beside_manifest(counted, manifest(build_dir).get("exclusions") or {}, "reason", "sessions")


def redactions(build_dir: str | Path) -> Rows:
    """Redactions per kind in the kept sessions (how many sessions, how many spans), beside the manifest's total."""
    counted = _rows(build_dir, """
        SELECT item.kind AS kind, count(DISTINCT session_id) AS sessions, sum(item.count)::BIGINT AS count
        FROM (SELECT session_id, unnest(redactions) AS item FROM trajectories) GROUP BY 1""")
    sessions_of = {row["kind"]: row["sessions"] for row in counted}
    merged = _beside_manifest({row["kind"]: row["count"] for row in counted}, manifest(build_dir).get("redactions") or {}, "kind", "count")
    return [{"kind": row["kind"], "sessions": sessions_of.get(row["kind"], 0), **row} for row in merged]


def telemetry(build_dir: str | Path) -> Rows:
    """What the Starcode telemetry events became and what was redacted in them, from the manifest's `telemetry`
    section (events are not sessions, so the `redactions` table, over the sessions' rows, leaves them out)."""
    section = manifest(build_dir).get("telemetry") or {}
    counts = [("events", "events"), ("stored twice", "duplicates"), ("left out (org filter, forgotten)", "left_out"),
              ("turns without an answer", "unusable_turns"), ("sft rows", "sft_rows"), ("behavior rows", "behavior_rows")]
    rows = [{"item": item, "count": section[key]} for item, key in counts if key in section]
    return rows + [{"item": f"redacted: {kind}", "count": count} for kind, count in sorted((section.get("redactions") or {}).items())]


def provenance(build_dir: str | Path) -> Rows:
    """Seed 003's agent actions per latest outcome (`none`: no outcome yet; `missing action`: outcomes of an action the
    lake does not hold) with their outcomes, from the `provenance` table; then the rows labelled with them (the manifest's)."""
    rows = _rows(build_dir, """
        SELECT CASE WHEN action_found THEN coalesce(outcome, 'none') ELSE 'missing action' END AS item,
               count(*) FILTER (action_found) AS actions, sum(outcome_count)::BIGINT AS outcomes
        FROM provenance GROUP BY 1 ORDER BY 1""")
    labelled = (manifest(build_dir).get("provenance") or {}).get("labelled_rows") or {}
    return [{**row, "rows": None} for row in rows] + [{"item": f"{table} rows labelled", "actions": None, "outcomes": None, "rows": count} for table, count in sorted(labelled.items())]


def sft_sources(build_dir: str | Path) -> Rows:
    """sft rows per source and split: the sessions' (ingest, teacher, actor) beside telemetry turns and public dataset records."""
    return _rows(build_dir, """
        SELECT source, split, count(*) AS rows, sum(num_tokens)::BIGINT AS tokens, sum(loss_tokens)::BIGINT AS loss_tokens
        FROM sft GROUP BY source, split ORDER BY source NULLS LAST, split DESC""")


def datasets(build_dir: str | Path) -> Rows:
    """The public code-edit datasets the build took sft rows from (the manifest's `datasets` section): licence, rows per
    split, the test records held out (in `lake/processed/datasets/<language>/test.jsonl`), what train_share and dedup left out."""
    section = manifest(build_dir).get("datasets") or {}
    return [{"dataset": name, "license": item.get("license"), "version": item.get("version"), "train": item.get("train", 0),
             "dev": item.get("dev", 0), "test_held_out": item.get("test_held_out", 0), "left_out_by_share": item.get("left_out_by_share", 0),
             "duplicates": item.get("duplicates", 0)} for name, item in sorted((section.get("datasets") or {}).items())]


def _beside_manifest(counted: dict[str, int], in_manifest: dict[str, int], key: str, value: str) -> Rows:
    rows = [{key: name, value: counted.get(name, 0), "manifest": in_manifest.get(name)} for name in {*counted, *in_manifest}]
    return sorted(rows, key=lambda row: (-row[value], -(row["manifest"] or 0), row[key]))


def disagreements(rows: Rows, key: str, value: str) -> list[str]:
    """The `key`s of `exclusions` or `redactions` rows whose `value` differs from the manifest's figure."""
    return [row[key] for row in rows if row["manifest"] is not None and row["manifest"] != row[value]]


def sft_splits(build_dir: str | Path) -> Rows:
    return _rows(build_dir, """
        SELECT split, tier, count(*) AS rows, sum(num_tokens)::BIGINT AS tokens, sum(loss_tokens)::BIGINT AS loss_tokens
        FROM sft GROUP BY split, tier ORDER BY split DESC, tier""")


def behaviors(build_dir: str | Path) -> Rows:
    return _rows(build_dir, """
        SELECT kind, behavior, count(*) AS rows, count(*) FILTER (recovered) AS recovered
        FROM behavior GROUP BY kind, behavior ORDER BY kind, rows DESC, behavior""")


def duplicates(build_dir: str | Path) -> Rows:
    return _rows(build_dir, """
        SELECT kind, count(*) AS rows, round(avg(similarity), 4) AS mean_similarity
        FROM duplicates GROUP BY kind ORDER BY kind""")


def session_points(build_dir: str | Path) -> "pa.Table":
    """One row per session with what the plots need: tier, score, quality, steps, tokens, domain, model."""
    with connect(build_dir) as con:
        return con.sql("""
            SELECT session_id, tier, score, quality, total_steps, total_tokens, domain, model_engine, training_eligible
            FROM trajectories ORDER BY session_id""").to_arrow_table()


# name -> (title, function): the order `trajforge stats` prints them in.
TABLE_QUERIES: dict[str, tuple[str, Callable[[str | Path], Rows]]] = {
    "tiers": ("sessions per tier", tiers),
    "model_engines": ("sessions per model engine", model_engines),
    "domains": ("sessions per domain", domains),
    "sources": ("sessions per source", sources),
    "sft_sources": ("sft rows per source and split (dataset: public code-edit records)", sft_sources),
    "datasets": ("public code-edit datasets: sft rows per split, test held out", datasets),
    "exclusions": ("excluded from training, per reason (manifest beside)", exclusions),
    "redactions": ("redactions per kind (manifest beside)", redactions),
    "telemetry": ("Starcode telemetry events (POST /v1/events): what they became, their redactions", telemetry),
    "provenance": ("agent actions (seed 003) per latest outcome, and the rows labelled with them", provenance),
    "sft": ("sft rows per split and tier", sft_splits),
    "behavior": ("behavior rows per kind", behaviors),
    "duplicates": ("duplicates dropped, per kind", duplicates),
}


def all_stats(build_dir: str | Path) -> dict[str, Any]:
    """The summary and every table: what `trajforge stats --json` prints."""
    return {"build": build_summary(build_dir), "tables": {name: query(build_dir) for name, (_, query) in TABLE_QUERIES.items()}}
