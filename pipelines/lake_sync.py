"""`trajforge lake sync URI`: the raw lake copied to shared or object storage, incrementally (seed 002 section 7: the
trajectory store's "incremental upload to object storage"; DESIGN: the lake on pyarrow's filesystems).

What goes: every file under `<lake>/raw/` (envelope segments, telemetry and provenance events, trajectories, tasks,
the datasets' sources and normalized files, tombstones), or only the folders `--only` names (`raw/trajectories`), to
the same relative path under the URI. Names starting with a dot (temporary and partial files, staging folders) stay
behind; the SQLite indexes (`lake/registry`) are rebuilt from the raw files and are not synced; builds go with
`trajforge lake publish`.

Incremental: `<lake>/state/sync/<digest of the URI>.json` records, per file, the size and modification time it had
when it was sent and the size and sha256 of what was sent. A file with the same size and time is not read again; any
other is sent whole (object stores cannot append), hashed as it streams and its size read back. A file that grows
while it is sent (an open segment) is recorded as sent and goes again next time. The record is saved after every file,
so an interrupted sync goes on where it stopped. A recorded file counts as sent only while the URI still holds it (its
listing names it as recorded, or it is there at the recorded size): a destination emptied since gets it again. Without a record (another machine, a lost state folder) a file that
`<URI>/SYNC.json` lists at the same size and sha256 is not sent again.

`<URI>/SYNC.json` (written every minute during a sync and at its end) lists every synced file with its size and
sha256: a reader takes the files it lists at those values (one that differs is being replaced by a sync in progress).
Nothing at the URI is ever deleted: the raw lake is append-only, and tombstones travel with it. One sync of a lake to a
URI at a time.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from trajforge import lake_fs
from trajforge.atomic import write_atomic
from trajforge.errors import ConfigError, TrajforgeError
from trajforge.lake import Lake, sha256_of

log = logging.getLogger(__name__)
LISTING = "SYNC.json"
LISTING_EVERY_S = 60.0


def record_path(lake: Lake, uri: str, command: str = "sync") -> Path:
    """Where this lake keeps what it sent to (`sync`) or took from (`pull`) `uri` (its path, query left out: keys may
    change, the place does not)."""
    shown = lake_fs.open_uri(uri).uri
    return lake.root / "state" / command / f"{hashlib.sha256(shown.encode()).hexdigest()[:16]}.json"


def files_to_sync(lake: Lake, only: list[str] | None = None) -> list[str]:
    """The lake-relative paths of the files a sync sends, sorted."""
    roots = [lake.raw] if not only else [_inside_raw(lake, folder) for folder in only]
    found = set()
    for root in roots:
        candidates = [root] if root.is_file() else sorted(root.rglob("*")) if root.is_dir() else []
        for path in candidates:
            relative = path.relative_to(lake.root)
            if path.is_file() and not path.is_symlink() and not any(part.startswith(".") for part in relative.parts):
                found.add(relative.as_posix())
    return sorted(found)


def _inside_raw(lake: Lake, folder: str) -> Path:
    path = (lake.root / folder).resolve()
    if not path.is_relative_to(lake.raw.resolve()):
        raise ConfigError(f"--only {folder}: not under {lake.raw} (give a folder of the raw lake, e.g. raw/trajectories; "
                          "builds are published with `trajforge lake publish`)")
    if not path.exists():
        raise ConfigError(f"--only {folder}: {path} does not exist")
    return lake.root / path.relative_to(lake.root.resolve())


@contextmanager
def locked(path: Path, command: str = "sync") -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TrajforgeError(f"another `trajforge lake {command}` of this lake and this URI is running ({path.with_suffix('.lock')} "
                                 "is locked): wait for it to end") from None
        yield
    finally:
        os.close(fd)


def read_record(path: Path) -> dict[str, dict[str, Any]]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))["files"]
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("%s is unreadable (%s): every file is compared with the URI's %s instead", path, exc, LISTING)
        return {}


def remote_listing(prefix: lake_fs.Remote, *, strict: bool = False) -> dict[str, dict[str, Any]]:
    """`<URI>/SYNC.json`'s files, each `{bytes, sha256}`; {} when there is none. One that is not such a listing is
    refused when `strict` (a pull has nothing to check the files against), else warned of (a sync sends again)."""
    raw = lake_fs.read_bytes(prefix, LISTING)
    if raw is None:
        return {}
    try:
        files = json.loads(raw)["files"]
        if isinstance(files, dict) and all(isinstance(entry, dict) and type(entry.get("bytes")) is int and isinstance(entry.get("sha256"), str)
                                           for entry in files.values()):
            return files
    except (ValueError, KeyError, TypeError):
        pass
    if strict:
        raise TrajforgeError(f"{prefix.show(LISTING)} is not a sync listing ({{\"files\": {{path: {{\"bytes\", \"sha256\"}}}}}}); "
                             f"run `trajforge lake sync {prefix.uri}` on the machine that holds the lake to write it again")
    log.warning("%s is not a sync listing: files are compared by sending them again", prefix.show(LISTING))
    return {}


def _outside(lake: Lake, prefix: lake_fs.Remote) -> None:
    """A local URI inside the raw lake (each sync would send the copies the last one made there again), or the lake
    itself (its raw/ written onto itself), is refused; elsewhere in the lake's folder is a place like any other."""
    from pyarrow import fs as pafs

    if not isinstance(prefix.fs, pafs.LocalFileSystem):
        return
    target, raw = Path(prefix.path).resolve(), lake.raw.resolve()
    if target.is_relative_to(raw) or target == lake.root.resolve():
        raise ConfigError(f"{prefix.uri} is the lake {lake.root} or inside its raw/: sync it to a place outside the raw lake")


def _entry(record_entry: dict[str, Any]) -> dict[str, Any]:
    return {"bytes": record_entry["bytes"], "sha256": record_entry["sha256"]}


def still_there(prefix: lake_fs.Remote, record: dict[str, dict[str, Any]], remote: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The recorded files the URI still holds: those its listing names as recorded, and those a sync cut short before its
    listing sent (found at the recorded size). A destination emptied or replaced since holds none, so all go again."""
    return {path: _entry(e) for path, e in record.items()
            if remote.get(path) == _entry(e) or (path not in remote and lake_fs.size_of(prefix, path) == e["bytes"])}


def signature(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def sync_lake(lake: Lake, uri: str, *, only: list[str] | None = None, progress: bool = True) -> dict[str, Any]:
    """Send what changed under the raw lake to `uri` (see the module's doc); what was done."""
    from tqdm import tqdm

    started = time.monotonic()
    prefix = lake_fs.open_uri(uri)
    _outside(lake, prefix)
    record_file = record_path(lake, uri)
    with locked(record_file):
        record = read_record(record_file)
        listing = {**(remote := remote_listing(prefix)), **still_there(prefix, record, remote)}
        paths = files_to_sync(lake, only)
        counts = {"files": len(paths), "sent": 0, "unchanged": 0, "matched_remote": 0, "bytes_sent": 0}
        last_listing = time.monotonic()
        for relative in tqdm(paths, desc="sync", unit="file", disable=not progress):
            local = lake.root / relative
            before = signature(local)
            known = record.get(relative)
            if known and [known["bytes"], known["mtime_ns"]] == list(before) and listing.get(relative) == _entry(known):
                counts["unchanged"] += 1
                continue
            listed = listing.get(relative)
            if known is None and listed and listed["bytes"] == before[0] and listed["sha256"] == sha256_of(local):
                record[relative] = {**listed, "mtime_ns": before[1]}
                counts["matched_remote"] += 1
            else:
                size, sha256 = lake_fs.upload(local, prefix, relative)
                if lake_fs.size_of(prefix, relative) != size:
                    raise TrajforgeError(f"{prefix.show(relative)} reads back with another size than the {size} bytes sent: the storage "
                                         "did not keep it; run the sync again")
                after = signature(local)
                record[relative] = {"bytes": size, "sha256": sha256, "mtime_ns": after[1] if after[0] == size else -1}
                counts["sent"] += 1
                counts["bytes_sent"] += size
            listing[relative] = {"bytes": record[relative]["bytes"], "sha256": record[relative]["sha256"]}
            write_atomic(record_file, json.dumps({"uri": prefix.uri, "files": record}, sort_keys=True))
            if time.monotonic() - last_listing > LISTING_EVERY_S:
                _write_listing(prefix, listing)
                last_listing = time.monotonic()
        _write_listing(prefix, listing)
    result = {"uri": prefix.uri, **counts, "listing": prefix.show(LISTING), "seconds": round(time.monotonic() - started, 2)}
    log.info("synced %s to %s: %d sent (%d bytes), %d unchanged, %d already there", lake.raw, prefix.uri, counts["sent"],
             counts["bytes_sent"], counts["unchanged"], counts["matched_remote"])
    return result


def _write_listing(prefix: lake_fs.Remote, listing: dict[str, dict[str, Any]]) -> None:
    body = {"written_at": time.time(), "files": dict(sorted(listing.items()))}
    lake_fs.upload(json.dumps(body, indent=1).encode(), prefix, LISTING)


def summary(result: dict[str, Any]) -> str:
    return (f"synced {result['files']} raw lake files to {result['uri']}: {result['sent']} sent ({result['bytes_sent']:,} bytes), "
            f"{result['unchanged']} unchanged since the last sync, {result['matched_remote']} already there; "
            f"{result['listing']} lists them with their sha256")
