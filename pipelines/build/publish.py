"""Publishing a finished build to shared or object storage: `trajforge lake publish BUILD URI`, `trajforge build --publish-to URI`.

The build is made locally first (its `.partial` folder, fsync, rename, `curated/LATEST`: `manifest.publish`), then
copied to `<URI>/<build id>/`:

1. every file the manifest lists (the tables' `files` and the staging area's `staging`), each read back after the
   upload and checked against the manifest's size and sha256; a file already there with that size and sha256 is
   skipped, so running the same command again after an interruption completes the copy and sends only what is missing;
2. `manifest.json`, last: it is the commit marker, and a build without one at the destination is not published (the
   learner refuses it and says to run the publish again);
3. `<URI>/LATEST` (an `--org` build: `LATEST.org=<org>`) naming the build, unless it names a newer build already
   (build ids begin with their UTC time).

Nothing is ever deleted at the destination; a build id published there with another manifest is refused.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from trajforge import lake_fs
from trajforge.errors import LakeCorruption, TrajforgeError
from trajforge.lake import Lake, check_listed_file, read_build_manifest

log = logging.getLogger(__name__)


def _listed(manifest: dict[str, Any], build_dir: Path) -> list[dict[str, Any]]:
    entries = [entry for key in ("files", "staging") for entry in manifest.get(key) or []]
    for entry in entries:
        if not isinstance(entry, dict) or not entry.get("path") or "sha256" not in entry or "bytes" not in entry:
            raise LakeCorruption(f"{build_dir / 'manifest.json'} lists a file without path, bytes and sha256 ({entry!r}); rebuild with `trajforge build --full`")
    listed = {entry["path"] for entry in entries} | {"manifest.json"}
    extra = sorted(path.relative_to(build_dir).as_posix() for path in build_dir.rglob("*") if path.is_file())
    extra = [path for path in extra if path not in listed]
    if extra:
        log.warning("not published: %d file(s) of %s that its manifest does not list (%s)", len(extra), build_dir, ", ".join(extra[:5]))
    return entries


def _copy(build_dir: Path, folder: lake_fs.Remote, entry: dict[str, Any]) -> bool:
    """Make `folder/<path>` hold the entry's file; False when it already did."""
    relative, size, sha256 = entry["path"], entry["bytes"], entry["sha256"]
    if lake_fs.size_of(folder, relative) == size and lake_fs.hash_remote(folder, relative)[1] == sha256:
        return False
    local = check_listed_file(build_dir, entry)  # there, at its size
    sent = lake_fs.upload(local, folder, relative)
    if sent != (size, sha256):
        lake_fs.delete(folder, relative)
        raise LakeCorruption(f"{local} does not match the sha256 in {build_dir / 'manifest.json'}: the local build is damaged; "
                             "rebuild with `trajforge build --full` and publish that build")
    if lake_fs.hash_remote(folder, relative) != sent:
        raise TrajforgeError(f"{folder.show(relative)} reads back with another size or sha256 than was uploaded: the storage did not keep "
                             "it; run the publish again")
    return True


def _point_latest(prefix: lake_fs.Remote, build_id: str, org: str | None) -> bool:
    """Point LATEST (LATEST.org=<org>) at `build_id` unless it names a newer build; True when it now names it."""
    marker = lake_fs.marker_name(org)
    current = (lake_fs.read_bytes(prefix, marker) or b"").decode("utf-8", "replace").strip()
    if current and current > build_id:
        log.info("%s names %s, newer than %s: left as it is", prefix.show(marker), current, build_id)
        return False
    if current != build_id:
        lake_fs.upload((build_id + "\n").encode(), prefix, marker)
    return True


def publish_build(lake: Lake, build: str, destination: str) -> dict[str, Any]:
    """Copy the finished build `build` (`latest`, `latest:<org>`, a build id, a build folder) of `lake` to `destination`
    (a pyarrow filesystem URI: the prefix that holds published builds); returns what was done."""
    started = time.monotonic()
    build_dir = lake.resolve_build(build)
    manifest = read_build_manifest(build_dir)  # a damaged one is named, not a JSON traceback
    manifest_bytes = (build_dir / "manifest.json").read_bytes()
    build_id = str(manifest.get("build_id") or build_dir.name)
    entries = _listed(manifest, build_dir)
    prefix = lake_fs.open_uri(destination)
    folder = prefix.child(build_id)
    there = lake_fs.read_bytes(folder, "manifest.json")
    if there is not None and there != manifest_bytes:
        raise TrajforgeError(f"{folder.uri} already holds a build {build_id} with another manifest.json (published from another lake?); "
                             "publish to another prefix, or remove that build there first")
    log.info("publishing build %s (%d files, %d bytes) to %s", build_id, len(entries), sum(entry["bytes"] for entry in entries), folder.uri)
    uploaded = sum(_copy(build_dir, folder, entry) for entry in entries)
    if there is None:
        sent = lake_fs.upload(manifest_bytes, folder, "manifest.json")
        if lake_fs.hash_remote(folder, "manifest.json") != sent:
            raise TrajforgeError(f"{folder.show('manifest.json')} reads back with other bytes than were uploaded; run the publish again")
    latest = _point_latest(prefix, build_id, manifest.get("org"))
    result = {"build_id": build_id, "uri": folder.uri, "files": len(entries), "uploaded": uploaded, "skipped": len(entries) - uploaded,
              "bytes": sum(entry["bytes"] for entry in entries), "manifest_written": there is None, "latest": latest,
              "seconds": round(time.monotonic() - started, 2)}
    _remember(lake, prefix, build_id)
    log.info("published build %s to %s: %d uploaded, %d already there%s", build_id, folder.uri, uploaded, len(entries) - uploaded,
             f"; {prefix.show(lake_fs.marker_name(manifest.get('org')))} names it" if latest else "")
    return result


def destinations(lake: Lake) -> dict[str, list[str]]:
    """`<lake>/state/publish.json`: per destination (its URI without the query), the builds published there, newest last
    (what `trajforge lake info` shows, and `trajforge forget` names for removal)."""
    try:
        known = json.loads((lake.root / "state" / "publish.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {uri: builds for uri, builds in known.items() if isinstance(builds, list)} if isinstance(known, dict) else {}


def _remember(lake: Lake, prefix: lake_fs.Remote, build_id: str) -> None:
    from trajforge.atomic import write_atomic

    known = destinations(lake)
    builds = [item for item in known.get(prefix.uri) or [] if item != build_id] + [build_id]
    write_atomic(lake.root / "state" / "publish.json", json.dumps({**known, prefix.uri: builds}, indent=1, sort_keys=True))


def summary(result: dict[str, Any]) -> str:
    org_note = "" if result["latest"] else " (LATEST names a newer build and was left as it is)"
    return (f"published build {result['build_id']} to {result['uri']}: {result['files']} files, {result['uploaded']} uploaded, "
            f"{result['skipped']} already there{org_note}; train on it with `--build {result['uri']}`")
