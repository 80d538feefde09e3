"""Where things live in the lake. Every component asks this module for paths instead of joining strings; and the
check of a file a build's manifest lists, which every reader of a build makes."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trajforge.errors import ConfigError, LakeCorruption


def refuse_a_file(root: Path, setting: str, what: str) -> None:
    """A lake root that is there but not a folder stops the command before it starts anything (it was a
    NotADirectoryError in whichever Ray worker first made a folder under it)."""
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{setting}: {root} is not a folder; give {what} (nothing was written)")


@dataclass(frozen=True)
class Lake:
    root: Path

    @classmethod
    def at(cls, root: str | Path) -> "Lake":
        return cls(Path(root).expanduser().resolve())

    @property
    def raw(self) -> Path:
        return self.root / "raw"

    @property
    def raw_envelopes(self) -> Path:
        """Append-only envelope segments, partitioned `date=YYYY-MM-DD/`."""
        return self.raw / "envelopes"

    @property
    def raw_events(self) -> Path:
        """Starcode telemetry events as JSON lines, `org=<org>/date=YYYY-MM-DD/type=<event type>/<writer>.jsonl`."""
        return self.raw / "events"

    @property
    def raw_provenance(self) -> Path:
        """Provenance events (seed 003: agent_action, outcome) as JSON lines,
        `customer=<customer>/date=YYYY-MM-DD/<writer>.jsonl`."""
        return self.raw / "provenance"

    @property
    def provenance_db(self) -> Path:
        """SQLite: API tokens (hashes only) and the query index of the provenance events (rebuilt from the raw lines)."""
        return self.root / "registry" / "provenance.db"

    @property
    def events_db(self) -> Path:
        """SQLite: the event ids already stored (the dedup index of `POST /v1/events`)."""
        return self.root / "registry" / "events.db"

    @property
    def registry_db(self) -> Path:
        """SQLite: sessions, processed envelopes (the HMAC dedup index), segments, gaps, ledger."""
        return self.root / "registry" / "ingest.db"

    @property
    def default_key_file(self) -> Path:
        return self.root / "keys" / "ingest.key"

    @property
    def quarantine(self) -> Path:
        """Bytes cut off damaged files (torn tails), kept for inspection, never read as data."""
        return self.root / "quarantine"

    @property
    def raw_trajectories(self) -> Path:
        """Step records of the actor loops and teacher jobs (JSON lines, `trajforge.trajectories`)."""
        return self.raw / "trajectories"

    @property
    def synthetic_tasks(self) -> Path:
        """The verified synthetic ast-grep tasks `trajforge synth-rules` writes (JSON lines, `_meta.json` beside)."""
        return self.raw / "tasks" / "synth_rules" / "tasks.jsonl"

    @property
    def raw_datasets(self) -> Path:
        """Public code-edit datasets (`pipelines/datasets`): one folder per dataset, `<name>/source/` (the archive or file as
        downloaded, untouched), `<name>/normalized/part-*.jsonl` and `<name>/_meta.json`, published together."""
        return self.raw / "datasets"

    def raw_dataset(self, name: str) -> Path:
        return self.raw_datasets / name

    @property
    def processed_datasets(self) -> Path:
        """The datasets' processed splits: `<language>/<split>.jsonl` and `manifest.json`, published together."""
        return self.root / "processed" / "datasets"

    @property
    def tombstones(self) -> Path:
        """Deletion requests (`trajforge forget`): one JSON line per contributor to leave out of every later build."""
        return self.raw / "tombstones" / "tombstones.jsonl"

    @property
    def curated(self) -> Path:
        """One folder per build (`<build id>/`: a Parquet dataset per table and `manifest.json`)."""
        return self.root / "curated"

    def build_dir(self, build_id: str) -> Path:
        return self.curated / build_id

    def latest_marker(self, org: str | None = None) -> Path:
        """`curated/LATEST` names the newest complete build of the whole lake; `curated/LATEST.org=<org>` the newest
        `--org` build of that organisation (so an organisation's build never becomes what `latest` trains on)."""
        from trajforge.contracts.events import partition_name

        return self.curated / ("LATEST" if org is None else f"LATEST.org={partition_name(org)}")

    def latest_build_id(self, org: str | None = None) -> str | None:
        """The newest complete build (of `org`): its marker names it (written last, atomically, by the build)."""
        marker = self.latest_marker(org)
        return marker.read_text().strip() or None if marker.is_file() else None

    def resolve_build(self, build: str = "latest") -> Path:
        """`latest` (the whole lake's newest build), `latest:ORG` (the newest `--org ORG` build), a build id, or a path
        to a build folder -> the build folder (raises when absent)."""
        from trajforge.errors import TrajforgeError

        if build == "latest" or build.startswith("latest:"):
            org = build.partition(":")[2] or None
            build_id = self.latest_build_id(org)
            if build_id is None and not self.root.exists():
                raise TrajforgeError(f"no lake at {self.root} (the folder does not exist): pass --lake with the lake's folder")
            if build_id is None:
                made_by = f"trajforge build --lake {self.root}" + (f" --org {org}" if org else "")
                orgs = sorted(marker.name.partition(".org=")[2] for marker in self.curated.glob("LATEST.org=*")) if org is None else []
                also = f", or name one of its --org builds: {', '.join(f'latest:{name}' for name in orgs)}" if orgs else ""
                raise TrajforgeError(f"no {'build' if org is None else f'--org {org} build'} in {self.curated}; run `{made_by}` first{also}")
            path = self.build_dir(build_id)
        else:
            path = Path(build) if Path(build).is_dir() else self.build_dir(build)
        if path.name.endswith(".partial"):
            raise TrajforgeError(f"{path} is the work folder of a build that has not finished (or was killed); "
                                 f"use a finished build in {self.curated}")
        if not path.exists() and (self.curated / f".{path.name}.partial").is_dir():
            raise TrajforgeError(f"build {path.name} has not finished (it was killed, or still runs): only its work folder "
                                 f"{self.curated / f'.{path.name}.partial'} is there; use a finished build in {self.curated}")
        if not path.exists():
            raise TrajforgeError(f"no build {build!r}: {path} does not exist; name a build id in {self.curated}, `latest`, "
                                 "or a build folder")
        if not path.is_dir():
            raise TrajforgeError(f"{build!r} is a file, not a build: give a build folder, a build id in {self.curated} or `latest`")
        if not (path / "manifest.json").is_file():
            raise TrajforgeError(f"{path} is not a complete build (no manifest.json); list builds in {self.curated}")
        if build.startswith("latest:") and build.partition(":")[2]:
            self._check_org(path, build.partition(":")[2])
        return path

    def _check_org(self, path: Path, org: str) -> None:
        """Org ids that differ only in characters a folder name cannot hold share a `LATEST.org=` marker: the build it
        names must be one of `org`, never the other organisation's."""
        from trajforge.errors import TrajforgeError

        built_for = read_build_manifest(path).get("org")
        if built_for != org:
            raise TrajforgeError(f"{self.latest_marker(org)} names build {path.name}, of org {built_for!r}, not of {org!r} (org ids "
                                 "that differ only in characters other than A-Za-z0-9._- share that marker): name the build "
                                 f"of {org!r} by its build id in {self.curated}")

    def ensure(self) -> "Lake":
        """Create the lake's folders, each private to its owner (0700) when this call creates it."""
        for path in (self.root, self.raw, self.raw_envelopes, self.registry_db.parent, self.quarantine):
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_build_manifest(build_dir: Path) -> dict[str, Any]:
    """A build's `manifest.json`: an object with a `files` list, else a LakeCorruption naming it (not a JSON traceback)."""
    path = Path(build_dir) / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise LakeCorruption(f"{path} cannot be read ({exc}); rebuild with `trajforge build`") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
        raise LakeCorruption(f"{path} has no `files` list; rebuild with `trajforge build`")
    return manifest


def check_listed_file(build_dir: Path, entry: dict[str, Any], *, checksum: bool = False) -> Path:
    """A file of a build's manifest (`files` entry): there, at its size, and with `checksum` at its sha256; else a
    LakeCorruption naming it and how to mend the build."""
    path, listed_in = build_dir / entry["path"], build_dir / "manifest.json"
    mend = "restore it or rebuild with `trajforge build --full`"
    if not path.is_file():
        raise LakeCorruption(f"{path} is listed in {listed_in} but missing: the build is incomplete; {mend}")
    if "bytes" in entry and path.stat().st_size != entry["bytes"]:
        raise LakeCorruption(f"{path} has {path.stat().st_size} bytes, the manifest says {entry['bytes']}: the file is damaged; {mend}")
    if checksum and "sha256" in entry and sha256_of(path) != entry["sha256"]:
        raise LakeCorruption(f"{path} does not match the sha256 in {listed_in}: the file is damaged; {mend}")
    return path
