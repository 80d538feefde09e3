"""The build's staging area, `<build>/_stage/`: every table's rows before deduplication.

Staged rows carry `_origin`, the build that produced them. An incremental build hard-links its
parent's staging files and adds its own for the sessions that are new or changed; the final tables
take, for each session, the rows of the build that built it last, minus the dropped duplicates.
The staging area stays with the build, so the next incremental build can start from it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa

from trajforge.constants import EMBEDDING_DIM
from trajforge.contracts.curated import BEHAVIOR, DOMAIN_TAGS, SFT, TRAJECTORIES

ORIGIN = pa.field("_origin", pa.string())
STAGE_SCHEMAS = {
    "trajectories": TRAJECTORIES.append(pa.field("fingerprint", pa.string())).append(pa.field("minhash", pa.binary())).append(ORIGIN),
    "sft": SFT.append(ORIGIN),
    "behavior": BEHAVIOR.append(ORIGIN),
    "embeddings": pa.schema([("session_id", pa.string()), ("embedding", pa.list_(pa.float32(), EMBEDDING_DIM)), ("domain", pa.string()),
                             ("domain_tags", DOMAIN_TAGS), ORIGIN]),
}
STAGE_DIR = "_stage"


def stage_file(stage_dir: Path, table: str, origin: str, index: int, suffix: str = ".parquet") -> Path:
    return Path(stage_dir) / table / f"{origin}-b{index:06d}{suffix}"


def staged_files(stage_dir: Path, table: str, suffix: str = ".parquet") -> list[Path]:
    folder = Path(stage_dir) / table
    return sorted(path for path in folder.glob(f"*{suffix}") if not path.name.startswith(".")) if folder.is_dir() else []


def file_signature(path: Path) -> list[int] | None:
    """What says a raw file is the one a parent build read (None: it cannot be read, so nothing of it is reused).

    Size and mtime change with every append (the raw lake is append-only); a truncation (recovery cutting a torn tail) or
    a rewrite changes the size or the mtime, and always the ctime, which no tool can set back; a file renamed into
    place (a pull, a restore) has another inode. A lake copied elsewhere is read again, once.
    """
    try:
        stat = path.stat()
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]


FILE_LISTING = "files.json"  # what a build staged per raw file, under `_stage/<folder>/` (the index, the telemetry events)


def parent_file_entries(parent: Path | None, folder: str, version: int) -> dict[str, dict[str, Any]]:
    """The raw files a parent build staged per file under `_stage/<folder>/files.json` (the index, the telemetry events):
    relative path -> its entry; none without a parent, without the listing, or with a listing of another `version`."""
    if parent is None:
        return {}
    try:
        found = json.loads((parent / STAGE_DIR / folder / FILE_LISTING).read_text())
    except (OSError, ValueError):
        return {}
    return {entry["path"]: entry for entry in found.get("files", [])} if found.get("format") == version else {}


def link_staged(source: Path, target: Path) -> bool:
    """Hard-link (or copy, across filesystems) a parent's staged file into this build's staging area; False when it is gone."""
    if not source.is_file():
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
    return True
