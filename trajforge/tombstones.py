"""Tombstones: a contributor's right to be forgotten, as the design's raw-lake contract has it.

The raw lake is never rewritten, so deleting a contributor's data is an appended, logged record in
`lake/raw/tombstones/tombstones.jsonl`, fsync'd before `forget` returns. Every later build leaves
out all of that contributor's sessions (and rebuilds everything rather than reuse staged rows that
hold them); builds published earlier still hold them until someone removes those folders, which
`builds_holding` lists.

A torn last line (a process killed while appending, so never acknowledged) is ignored; any other
unreadable line stops the reader, since skipping it could skip a deletion.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
import uuid
from typing import Any

from trajforge.atomic import fsync_dir
from trajforge.errors import ConfigError, LakeCorruption
from trajforge.lake import Lake

log = logging.getLogger(__name__)
CONTRIBUTOR_ID = re.compile(r"^[0-9a-fA-F]{32}$")


def forget(lake: Lake, contributor_id: str, reason: str = "") -> dict[str, Any]:
    """Append (durably) a tombstone for `contributor_id`; returns the record."""
    if not isinstance(contributor_id, str) or not CONTRIBUTOR_ID.match(contributor_id):
        raise ConfigError(f"contributor id {contributor_id!r} is not 32 hex characters (the protocol's contributor_id)")
    record = {"tombstone_id": uuid.uuid4().hex, "contributor_id": contributor_id.lower(), "reason": str(reason)[:500],
              "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    path = lake.tombstones
    new_folders = [folder for folder in (path.parent.parent, path.parent) if not folder.is_dir()]
    path.parent.mkdir(parents=True, exist_ok=True)
    new_file = not path.exists()
    _cut_torn_tail(lake)
    with path.open("ab") as handle:
        handle.write((json.dumps(record, sort_keys=True) + "\n").encode("utf-8"))
        handle.flush()
        os.fsync(handle.fileno())
    if new_file:  # the file's name (and its new folders') must survive a power loss too, not only its bytes
        for folder in [path.parent, *(folder.parent for folder in reversed(new_folders))]:
            fsync_dir(folder)
    log.info("tombstone %s: contributor %s is left out of every later build", record["tombstone_id"], record["contributor_id"])
    return record


def _cut_torn_tail(lake: Lake) -> None:
    """Move the bytes after the last newline (an append that never finished) to the lake's quarantine."""
    path = lake.tombstones
    if not path.is_file() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    keep = data.rfind(b"\n") + 1
    if keep == len(data):
        return
    lake.quarantine.mkdir(parents=True, exist_ok=True)
    (lake.quarantine / f"tombstones-torn-{time.time_ns()}.bin").write_bytes(data[keep:])
    with path.open("r+b") as handle:
        handle.truncate(keep)
        os.fsync(handle.fileno())
    log.warning("%s: moved a torn last line (%d bytes) to %s", path, len(data) - keep, lake.quarantine)


def forgotten(lake: Lake) -> set[str]:
    """The contributor ids (lowercase) that have a tombstone."""
    path = lake.tombstones
    if not path.is_file():
        return set()
    lines = path.read_bytes().split(b"\n")
    ids = set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            contributor = record["contributor_id"]
            if not CONTRIBUTOR_ID.match(contributor):
                raise ValueError("not 32 hex characters")
        except (ValueError, KeyError, TypeError) as exc:
            if number == len(lines):  # the last line has no newline: an append that never finished
                log.warning("%s: ignoring a torn last line (an interrupted `trajforge forget`)", path)
                continue
            raise LakeCorruption(f"{path}:{number}: unreadable tombstone ({exc}); fix or remove the line by hand, "
                                 "since skipping it could skip a deletion") from exc
        ids.add(contributor.lower())
    return ids


def digest(ids: set[str]) -> str:
    """Changes whenever a contributor is forgotten: a build whose parent saw another set rebuilds everything."""
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:32]


HOLDING = {"trajectories": ["contributor_id"], "sft": [("provenance", "contributor_id")], "behavior": [("provenance", "contributor_id")],
           "provenance": ["actor_id", "customer_id"]}
"""Where a build's tables name a contributor: a session's, a telemetry event's sft and behaviour rows (no session of
theirs need exist), an agent action's actor or customer, as the build leaves them out."""


def builds_holding(lake: Lake, contributor_id: str) -> list[str]:
    """Published builds whose tables still hold rows of `contributor_id`."""
    found = []
    for build in sorted(path for path in lake.curated.glob("*") if path.is_dir() and not path.name.startswith(".")):
        if any(_names(build / table, columns, contributor_id.lower()) for table, columns in HOLDING.items()):
            found.append(build.name)
    return found


def _names(table_dir, columns: list, contributor_id: str) -> bool:
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    if not table_dir.is_dir():
        return False
    dataset = ds.dataset(str(table_dir), format="parquet")
    for column in columns:
        path = column if isinstance(column, tuple) else (column,)
        if path[0] not in dataset.schema.names:
            continue
        values = dataset.to_table(columns={"value": ds.field(*path)}).column("value").cast("string")
        if pc.any(pc.equal(pc.utf8_lower(values), contributor_id)).as_py():
            return True
    return False
