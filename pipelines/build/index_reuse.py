"""The raw lake's index, kept per raw file in the staging area so an incremental build reads only what changed.

Each raw file the index stage reads leaves `_stage/index/<sha256 of its path>-records.parquet` (its index: every record's
key, offset and length, with its quarantine entries and torn tail in the file's metadata) and, for an envelope segment,
`-envelopes.parquet` and `-steps.parquet` (the columns the scoring tasks take). `_stage/index/files.json` names, per raw
file, its signature when it was read (`staging.file_signature`, taken before the read) and the build that read it.

An incremental build links the parent's files of every raw file whose signature is the same and loads them instead of
reading the raw file; a file that grew, was truncated or rewritten is read again whole. A file with a torn tail is always
read again (whether its tail is quarantined depends on whether a writer still holds it), as is an unreadable one.
`INDEX_FORMAT` changing reads everything, and so does any change the parent choice sees (config, org, a tombstone).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from pipelines.build.columns import SegmentColumns
from pipelines.build.sources import FileIndex, Quarantined
from pipelines.build.staging import FILE_LISTING, STAGE_DIR, link_staged, parent_file_entries

FOLDER = "index"  # under the staging area
FILES = FILE_LISTING
INDEX_FORMAT = 1  # bumped whenever indexing or the scoring columns of a raw file change
PARTS = ("records", "envelopes", "steps")
_META = b"trajforge.index"


def staged_name(relative: str) -> str:
    return hashlib.sha256(relative.encode()).hexdigest()[:32]


def _part(folder: Path, name: str, part: str) -> Path:
    return folder / f"{name}-{part}.parquet"


def save(folder: str, relative: str, index: FileIndex, columns: SegmentColumns | None) -> None:
    """Stage one raw file's index (and a segment's columns); run in the index task that read it."""
    name, meta = staged_name(relative), {"quarantined": [item.as_dict() for item in index.quarantined], "torn_tail_bytes": index.torn_tail_bytes,
                                         "unscorable": columns.unscorable if columns is not None else {}}
    tables = {"records": index.records.replace_schema_metadata({_META: json.dumps(meta)})}
    if columns is not None:
        tables.update(envelopes=columns.envelopes, steps=columns.steps)
    for part, table in tables.items():
        pq.write_table(table, _part(Path(folder), name, part), compression="zstd")


def load(folder: str, relative: str, segment: bool) -> tuple[FileIndex, SegmentColumns | None]:
    """What `save` staged for `relative`, as the index stage returns it."""
    name = staged_name(relative)
    records = pq.read_table(_part(Path(folder), name, "records"))
    meta = json.loads(records.schema.metadata[_META])
    index = FileIndex(relative, records.replace_schema_metadata(None), [Quarantined(**item) for item in meta["quarantined"]], meta["torn_tail_bytes"])
    if not segment:
        return index, None
    tables = [pq.read_table(_part(Path(folder), name, part)).replace_schema_metadata(None) for part in ("envelopes", "steps")]
    return index, SegmentColumns(*tables, meta["unscorable"])


def parent_entries(parent: Path | None) -> dict[str, dict[str, Any]]:
    """The parent's staged raw files: relative path -> its entry (signature, origin)."""
    return parent_file_entries(parent, FOLDER, INDEX_FORMAT)


def link_parent(parent: Path, folder: Path, relative: str, segment: bool) -> bool:
    """Link the parent's staged index of `relative` into `folder`; False when one of its files is missing."""
    name = staged_name(relative)
    parts = PARTS if segment else PARTS[:1]
    return all(link_staged(_part(parent / STAGE_DIR / FOLDER, name, part), _part(folder, name, part)) for part in parts)


def write_entries(folder: Path, entries: list[dict[str, Any]]) -> None:
    (folder / FILES).write_text(json.dumps({"format": INDEX_FORMAT, "files": entries}))


def reusable(index: FileIndex) -> bool:
    """Whether a freshly read file's index may be reused by a later build: read whole, no torn tail, not unreadable."""
    return not index.torn_tail_bytes and not any(item.reason.startswith("unreadable") for item in index.quarantined)

