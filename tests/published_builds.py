"""A small finished build for the publishing tests: tests/sft_builds.py's sft files plus a staged file, all in the manifest."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from sft_builds import rows, write_build


def finished_build(lake: Path, build_id: str = "20260101T000000Z-0001", *, org: str | None = None) -> Path:
    """`<lake>/curated/<build_id>/`: two sft files, one staged file (under `staging`), manifest.json, LATEST."""
    folder = write_build(lake, build_id, rows(12, dev=3), files=2)
    staged = folder / "_stage" / "sft" / f"{build_id}-b000000.parquet"
    staged.parent.mkdir(parents=True)
    pq.write_table(pa.table({"x": [1, 2, 3]}), staged)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.update(org=org, staging=[{"path": staged.relative_to(folder).as_posix(), "bytes": staged.stat().st_size,
                                       "sha256": hashlib.sha256(staged.read_bytes()).hexdigest()}])
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return folder
