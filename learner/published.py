"""Builds the learner reads from shared or object storage (`trajforge lake publish`, `trajforge build --publish-to`):
`learner.data.builds: [{build: s3://bucket/prefix/<build id>}]` or `.../latest`.

The URI is resolved (`latest` through the prefix's LATEST object), its manifest read (none: the build was never
published there, or its publish was interrupted), and its sft files are downloaded into the cache's temporary folder,
each hashed while it streams and checked against the manifest's size and sha256 before a row is read: a file that
differs stops the start with a LakeCorruption naming its URI. The rows then go to the same Arrow cache as a local
build's (learner/sources.py), and the downloaded Parquet is removed.
"""

from __future__ import annotations

import logging
from pathlib import Path

from trajforge import lake_fs
from trajforge.errors import LakeCorruption, TrajforgeError

log = logging.getLogger(__name__)


def open_published(uri: str) -> tuple[lake_fs.Remote, dict]:
    """The build folder `uri` names (LATEST resolved) and its manifest. Org ids that differ only in characters a marker's
    name cannot hold share a `LATEST.org=` marker (as in a lake, `Lake.resolve_build`): `latest:ORG` must name a build of ORG."""
    folder = lake_fs.resolve_published(uri)
    manifest, _ = lake_fs.published_manifest(folder)
    name = lake_fs.open_uri(uri).name
    if name.startswith("latest:") and manifest.get("org") != (org := name.partition(":")[2]):
        raise TrajforgeError(f"{uri} names build {folder.name}, of org {manifest.get('org')!r}, not of {org!r} (org ids that differ only "
                             f"in characters other than A-Za-z0-9._- share that marker): name the build of {org!r} by its build id")
    return folder, manifest


def download(folder: lake_fs.Remote, entries: list[dict], into: Path) -> Path:
    """Download the manifest's `entries` of the build at `folder` into `into` (a new folder), each checked as it
    streams; returns `into`."""
    republish = f"publish it there again (`trajforge lake publish {folder.name} {folder.parent().uri}`), or rebuild and publish"
    for entry in entries:
        relative = entry["path"]
        local = into / relative
        local.parent.mkdir(parents=True, exist_ok=True)
        if lake_fs.size_of(folder, relative) is None:
            raise LakeCorruption(f"{folder.show(relative)} is listed in {folder.show('manifest.json')} but missing: the published build is "
                                 f"incomplete; {republish}")
        log.info("downloading %s", folder.show(relative))
        size, sha256 = lake_fs.hash_remote(folder, relative, local)
        if "bytes" in entry and size != entry["bytes"]:
            raise LakeCorruption(f"{folder.show(relative)} has {size} bytes, the manifest says {entry['bytes']}: the published file is "
                                 f"damaged; {republish}")
        if "sha256" in entry and sha256 != entry["sha256"]:
            raise LakeCorruption(f"{folder.show(relative)} does not match the sha256 in {folder.show('manifest.json')}: the published file "
                                 f"is damaged; {republish}")
    return into
