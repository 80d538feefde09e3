"""The build's staging area, `<build>/_stage/`: every table's rows before deduplication.

Staged rows carry `_origin`, the build that produced them. An incremental build hard-links its
parent's staging files and adds its own for the sessions that are new or changed; the final tables
take, for each session, the rows of the build that built it last, minus the dropped duplicates.
The staging area stays with the build, so the next incremental build can start from it.
"""

from __future__ import annotations

from pathlib import Path

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
