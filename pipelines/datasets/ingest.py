"""Ingesting one dataset into `lake/raw/datasets/<name>/` (seed 002 section 3.2, steps 1 to 4):

    source/<file or folder>       as downloaded or copied, untouched
    normalized/part-00000.jsonl   the common form, `records_per_shard` records a file, in the source's order (normalize.py)
    _meta.json                    the section 3.1 contract (`meta.DatasetMeta`)
    _ingest.json                  what made the normalized files (adapter and its settings, counts), to know when to redo

A record the adapter cannot turn into pre/post (`Unconvertible`: a multi-file patch, a smell with no refactored code)
is not normalized: it is counted by reason in `_ingest.json` (`not_converted`, with the first few locations and
messages in `not_converted_examples`), logged, and shown in the dataset's report; `_meta.json`'s `num_records` counts
the normalized records.

The folder is filled under a temporary name beside it and renamed into place (`trajforge.atomic.staged_dir`): a run
killed at any point leaves the dataset as it was (or, killed between the two renames, absent), never a folder that
looks complete; the next publish removes what killed runs left. A dataset whose published sha256 and adapter settings
equal the source's is skipped without fetching anything (`--force` ingests it again).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipelines.datasets.archives import readable_source
from pipelines.datasets.fetch import fetch, source_digest
from pipelines.datasets.meta import META_FILE, DatasetMeta, MetaError, now, read_meta
from pipelines.datasets.normalize import normalize_source
from pipelines.datasets.settings import DatasetSpec, DatasetsSettings
from trajforge.atomic import staged_dir
from trajforge.errors import ConfigError
from trajforge.lake import Lake

log = logging.getLogger(__name__)
INGEST_FILE = "_ingest.json"
DOWNLOADS = ".downloads"  # beside the datasets: the partial downloads the next run continues (pipelines/datasets/download.py)
NORMALIZED_VERSION = "3"  # bump when the normalized form, its sharding or an adapter changes: every dataset is normalized again


@dataclass
class Ingested:
    name: str
    status: str  # "ingested" or "skipped"
    num_records: int
    sha256: str
    path: str
    not_converted: dict[str, int] = field(default_factory=dict)
    """Records the adapter could not turn into pre/post, by reason."""


def recipe(spec: DatasetSpec, records_per_shard: int, split_mb: int) -> str:
    """The hash of what turns the source into the normalized files: another one means normalizing again."""
    relevant = {"version": NORMALIZED_VERSION, "adapter": spec.adapter, "fields": spec.fields and spec.fields.model_dump(),
                "file_format": spec.file_format, "archive_path": spec.archive_path, "language": spec.language, "records_per_shard": records_per_shard, "split_mb": split_mb,
                "meta": [spec.version, spec.license]}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


def _published(folder: Path, sha256: str | None, wanted: str) -> DatasetMeta | None:
    """The published metadata when the dataset there was made from this sha256 with this recipe, else None."""
    if sha256 is None or not (folder / META_FILE).is_file():
        return None
    try:
        meta = read_meta(folder)
        made = json.loads((folder / INGEST_FILE).read_text(encoding="utf-8"))
    except (MetaError, OSError, ValueError) as exc:
        log.warning("%s: ingesting again: %s", folder.name, exc)
        return None
    return meta if meta.sha256 == sha256 and made.get("recipe") == wanted else None


def ingest_dataset(name: str, spec: DatasetSpec, settings: DatasetsSettings, *, force: bool = False, progress: bool = True) -> Ingested:
    folder = Lake.at(settings.lake).raw_dataset(name)
    wanted = recipe(spec, settings.records_per_shard, settings.split_mb)
    current = source_digest(spec)
    if current is None:
        raise ConfigError(f"datasets.catalog.{name}.source: {spec.source} does not exist (relative to {Path.cwd()}): check the path")
    if not force and (meta := _published(folder, current[0], wanted)):
        log.info("%s: already ingested from sha256 %s (%d records): skipped", name, meta.sha256[:12], meta.num_records)
        return Ingested(name, "skipped", meta.num_records, meta.sha256, str(folder), not_converted(folder))
    with staged_dir(folder) as staging:
        fetched = fetch(name, spec, staging / "source", settings.download, folder.parent / DOWNLOADS, progress)
        with readable_source(fetched.path, staging, spec.archive_path) as (readable, names):
            names = {**names, str(staging): str(folder)}  # locations name the folder the records will be in, not its staging
            counts = normalize_source(name, spec, readable, staging / "normalized", settings.records_per_shard, names=names,
                                      progress=progress, cpus=settings.cpus_per_task, split_bytes=settings.split_mb << 20)
        meta = DatasetMeta(source=name, version=spec.version, license=spec.license, downloaded_at=now(), sha256=fetched.sha256,
                           num_records=counts["records"])
        (staging / INGEST_FILE).write_text(json.dumps({"recipe": wanted, "adapter": spec.adapter, "origin": spec.source,
                                                       "bytes": fetched.size, **counts}, indent=2) + "\n", encoding="utf-8")
        (staging / META_FILE).write_text(meta.to_json(), encoding="utf-8")  # last: a folder with it is complete
    log.info("%s: ingested %d records from %s (sha256 %s)", name, meta.num_records, spec.source, meta.sha256[:12])
    return Ingested(name, "ingested", meta.num_records, meta.sha256, str(folder), counts["not_converted"])


def not_converted(folder: Path) -> dict[str, int]:
    """The published dataset's count of records its adapter could not convert, by reason (empty when none or unknown)."""
    try:
        made = json.loads((folder / INGEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    counts = made.get("not_converted") if isinstance(made, dict) else None
    return {str(k): int(v) for k, v in counts.items() if isinstance(v, int)} if isinstance(counts, dict) else {}


def shards(folder: Path) -> list[Path]:
    return sorted((folder / "normalized").glob("part-*.jsonl"))


def ingest_all(settings: DatasetsSettings, only: list[str] | None = None, *, force: bool = False, progress: bool = True) -> list[Ingested]:
    chosen = settings.enabled(only)
    if not chosen:
        raise ConfigError("datasets.catalog: no enabled dataset to ingest; enable one or name it with --only")
    return [ingest_dataset(name, spec, settings, force=force, progress=progress) for name, spec in chosen.items()]


def as_dict(result: Ingested) -> dict[str, Any]:
    return asdict(result)
