"""The curated tables from the staging area: chosen rows, sorted by key, in Parquet files of fixed size.

DuckDB reads the staged files (with a memory limit, spilling to disk), keeps for each session the
rows of the build that built it last (`_origin`), drops the deduplicated sessions, sorts by the
table's key and streams record batches to pyarrow, which writes `part-00000.parquet`, ... with the
contract's schema. Nothing in a row depends on the time or the build id, so the same staged rows
give byte-identical files.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.build.staging import staged_files
from trajforge.contracts.curated import DUPLICATES, KEYS, SCHEMAS
from trajforge.lake import sha256_of

PARQUET_OPTIONS = {"compression": "zstd", "use_dictionary": True, "write_statistics": True}


def _write_shards(batches, schema: pa.Schema, folder: Path, rows_per_file: int) -> list[dict[str, Any]]:
    folder.mkdir(parents=True, exist_ok=True)
    written: list[dict[str, Any]] = []
    writer = None
    rows_in_file = 0

    def close() -> None:
        nonlocal writer
        if writer is not None:
            writer.close()
            path = folder / f"part-{len(written):05d}.parquet"
            written.append({"path": f"{folder.name}/{path.name}", "rows": rows_in_file})
            writer = None

    for batch in batches:
        table = pa.Table.from_batches([batch]).select(schema.names).cast(schema)
        offset = 0
        while offset < table.num_rows:
            if writer is None:
                writer = pq.ParquetWriter(folder / f"part-{len(written):05d}.parquet", schema, **PARQUET_OPTIONS)
                rows_in_file = 0
            take = min(rows_per_file - rows_in_file, table.num_rows - offset)
            writer.write_table(table.slice(offset, take), row_group_size=min(rows_per_file, 10000))
            rows_in_file += take
            offset += take
            if rows_in_file >= rows_per_file:
                close()
    close()
    if not written:  # an empty table is still a file, so readers find the schema
        pq.write_table(schema.empty_table(), folder / "part-00000.parquet", **PARQUET_OPTIONS)
        written.append({"path": f"{folder.name}/part-00000.parquet", "rows": 0})
    return written


def write_tables(build_dir: Path, stage_dir: Path, chosen: pa.Table, dropped: list[dict[str, Any]], *, rows_per_file: int,
                 embedded: bool, memory_limit: str = "1GB", label: Callable[[str, pa.RecordBatch], pa.RecordBatch] | None = None,
                 made: dict[str, pa.Table] | None = None) -> list[dict[str, Any]]:
    """Write every curated table; `chosen` is `(session_id, _origin)` of the sessions the build keeps. `label(table, batch)`
    finishes each batch of the staged tables' rows (the provenance labels); `made` holds tables the build made whole
    (the `provenance` table), written as they are."""
    import duckdb

    connection = duckdb.connect(config={"memory_limit": memory_limit, "threads": 2, "preserve_insertion_order": True,
                                        "temp_directory": str(stage_dir / "_duckdb")})
    connection.register("chosen", chosen)
    files: list[dict[str, Any]] = []
    try:
        for table in ("trajectories", "sft", "behavior"):
            schema, key = SCHEMAS[table], KEYS[table]
            sources = [str(path) for path in staged_files(stage_dir, table)]
            if not sources:
                files += _write_shards([], schema, build_dir / table, rows_per_file)
                continue
            columns = ", ".join(f't."{name}"' for name in schema.names if not (table == "trajectories" and name in ("embedding", "domain", "domain_tags")))
            join = ""
            if table == "trajectories":
                embeddings = [str(path) for path in staged_files(stage_dir, "embeddings")]
                if embedded and embeddings:
                    columns += ", e.embedding, coalesce(e.domain, t.domain) AS domain, coalesce(e.domain_tags, t.domain_tags) AS domain_tags"
                    join = f"LEFT JOIN read_parquet({embeddings!r}) e ON e.session_id = t.session_id AND e._origin = t._origin"
                else:
                    columns += ", t.embedding, t.domain, t.domain_tags"
            query = (f"SELECT {columns} FROM read_parquet({sources!r}) t JOIN chosen c ON c.session_id = t.session_id AND c._origin = t._origin "
                     f"{join} ORDER BY t.\"{key}\"")
            reader = connection.sql(query).to_arrow_reader(batch_size=8192)
            batches = reader if label is None else (label(table, batch) for batch in reader)
            files += _write_shards(batches, schema, build_dir / table, rows_per_file)
        rows = sorted(dropped, key=lambda row: row["dropped_session_id"])
        duplicates = pa.Table.from_pylist(rows, schema=DUPLICATES)
        files += _write_shards(duplicates.to_batches(max_chunksize=8192), DUPLICATES, build_dir / "duplicates", rows_per_file)
        for table, whole in (made or {}).items():
            files += _write_shards(whole.to_batches(max_chunksize=8192), SCHEMAS[table], build_dir / table, rows_per_file)
    finally:
        connection.close()
    for entry in files:
        path = build_dir / entry["path"]
        entry.update(bytes=path.stat().st_size, sha256=sha256_of(path))
    return files
