"""`trajforge lake pull URI`: a raw lake that `trajforge lake sync` put at URI, brought into a local lake, incrementally
(a machine that builds or trains elsewhere than where the data arrives).

The files `<URI>/SYNC.json` lists (under `raw/`, or the folders `--only` names) are downloaded to the same paths in the
lake, each hashed as it streams and checked against the listing's size and sha256 before it is renamed into place
(fsync'd): a file that differs from its listing is being replaced by a sync in progress and is left for the next pull.
`<lake>/state/pull/<digest of the URI>.json` records what was taken, so a file unchanged since is not read again; a
local file already at the listed size and sha256 is kept. The local lake is never made to lose a byte: a local file
replaced only when it is a prefix of the listed one (the raw lake only grows), otherwise kept and counted (`kept_local`:
this lake took data of its own there). A listed path outside `raw/`, or one no file can have (an empty, hidden or
over-255-byte name, a NUL), is refused. One pull of a lake from a URI at a time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import time
from pathlib import Path
from typing import Any

from pipelines.lake_sync import LISTING, locked, read_record, record_path, remote_listing, signature
from trajforge import lake_fs
from trajforge.atomic import fsync_dir, fsync_file, write_atomic
from trajforge.errors import ConfigError, TrajforgeError
from trajforge.lake import Lake, sha256_of

log = logging.getLogger(__name__)
COUNTS = ("listed", "downloaded", "unchanged", "matched_local", "kept_local", "changed_remote", "refused")


def _wanted(relative: str, only: list[str] | None) -> bool:
    parts = relative.split("/")  # as written: `raw//x` or `raw/x/` names no file of a raw lake
    if parts[0] != "raw" or not all(map(_file_name, parts)):
        return False
    return not only or any(relative == folder.strip("/") or relative.startswith(folder.strip("/") + "/") for folder in only)


def _file_name(part: str) -> bool:
    """Whether `part` can be one name of a raw lake file here: not empty, hidden (`.`, `..`, temporary files), over 255
    bytes, holding a NUL, or not text."""
    try:
        return bool(part) and not part.startswith(".") and "\0" not in part and len(part.encode("utf-8")) <= 255
    except UnicodeEncodeError:
        return False


def _prefix_sha(path: Path, length: int) -> str:
    digest, left = hashlib.sha256(), length
    with path.open("rb") as handle:
        while left and (block := handle.read(min(left, 1 << 20))):
            digest.update(block)
            left -= len(block)
    return digest.hexdigest()


def _take(prefix: lake_fs.Remote, relative: str, listed: dict[str, Any], local: Path) -> str:
    """Bring one listed file into the lake; what happened (one of COUNTS)."""
    local.parent.mkdir(parents=True, exist_ok=True)
    temporary = local.with_name(f".{local.name}.pull-{secrets.token_hex(4)}")
    try:
        size, sha256 = lake_fs.hash_remote(prefix, relative, temporary)
        if (size, sha256) != (listed["bytes"], listed["sha256"]):
            log.info("%s differs from %s's listing (a sync is replacing it): left for the next pull", prefix.show(relative), LISTING)
            return "changed_remote"
        if local.exists():
            have = local.stat().st_size
            if have > size or _prefix_sha(temporary, have) != sha256_of(local):
                log.warning("%s holds bytes %s does not (this lake took data of its own there): kept as it is", local, prefix.show(relative))
                return "kept_local"
        fsync_file(temporary)
        os.replace(temporary, local)
        fsync_dir(local.parent)
        return "downloaded"
    finally:
        temporary.unlink(missing_ok=True)


def pull_lake(lake: Lake, uri: str, *, only: list[str] | None = None, progress: bool = True) -> dict[str, Any]:
    """Bring what `uri`'s SYNC.json lists into `lake` (see the module's doc); what was done."""
    from tqdm import tqdm

    started = time.monotonic()
    for folder in only or []:
        if not _wanted(folder.rstrip("/"), None):  # as `lake sync --only` refuses it, rather than pull nothing
            raise ConfigError(f"--only {folder}: not a folder of the raw lake (give one such as raw/trajectories; builds come "
                              "from `trajforge lake publish`)")
    prefix = lake_fs.open_uri(uri)
    if lake_fs.size_of(prefix, LISTING) is None:
        raise TrajforgeError(f"{prefix.show(LISTING)} does not exist: nothing was synced to {prefix.uri}; run `trajforge lake sync "
                             f"{prefix.uri}` on the machine that holds the lake first")
    listing = remote_listing(prefix, strict=True)
    try:
        lake.root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--lake {lake.root}: cannot make or use this folder ({exc.strerror or exc}); give the lake to pull into") from None
    record_file = record_path(lake, uri, "pull")
    counts = dict.fromkeys(COUNTS, 0)
    with locked(record_file, "pull"):
        record = read_record(record_file)
        for relative, listed in tqdm(sorted(listing.items()), desc="pull", unit="file", disable=not progress):
            if not _wanted(relative, None):
                log.warning("%s lists %r, which is no file of a raw lake: not taken", prefix.show(LISTING), relative)
                counts["refused"] += 1
                continue
            if not _wanted(relative, only):
                continue
            counts["listed"] += 1
            local = lake.root / relative
            known = record.get(relative)
            if known and local.exists() and [known["bytes"], known["mtime_ns"]] == list(signature(local)) \
                    and known["sha256"] == listed["sha256"]:
                counts["unchanged"] += 1
                continue
            if local.exists() and local.stat().st_size == listed["bytes"] and sha256_of(local) == listed["sha256"]:
                outcome = "matched_local"
            else:
                outcome = _take(prefix, relative, listed, local)
            counts[outcome] += 1
            if outcome in ("downloaded", "matched_local"):
                record[relative] = {"bytes": listed["bytes"], "sha256": listed["sha256"], "mtime_ns": signature(local)[1]}
                write_atomic(record_file, json.dumps({"uri": prefix.uri, "files": record}, sort_keys=True))
    log.info("pulled %s into %s: %d downloaded, %d unchanged, %d kept local, %d being replaced there", prefix.uri, lake.raw,
             counts["downloaded"], counts["unchanged"] + counts["matched_local"], counts["kept_local"], counts["changed_remote"])
    return {"uri": prefix.uri, **counts, "seconds": round(time.monotonic() - started, 2)}


def summary(result: dict[str, Any]) -> str:
    lines = [f"pulled {result['listed']} raw lake files from {result['uri']}: {result['downloaded']} downloaded, "
             f"{result['unchanged'] + result['matched_local']} already here"]
    if result["changed_remote"]:
        lines.append(f"  {result['changed_remote']} being replaced by a sync there: pull again after it")
    if result["kept_local"]:
        lines.append(f"  {result['kept_local']} kept as they are here (this lake holds bytes the synced copy does not)")
    if result["refused"]:
        lines.append(f"  {result['refused']} listed paths refused (outside raw/, or names no file can have)")
    return "\n".join(lines)
