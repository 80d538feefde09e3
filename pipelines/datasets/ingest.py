"""Ingesting one dataset into `lake/raw/datasets/<name>/` (seed 002 section 3.2, steps 1 to 4):

    source/<file or folder>       as downloaded or copied, untouched
    normalized/part-00000.jsonl   the common form, `records_per_shard` records a file, in the source's order
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
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipelines.datasets.adapters import CorruptRecord, Unconvertible, normalize, source_records
from pipelines.datasets.archives import readable_source, shown
from pipelines.datasets.fetch import fetch, source_digest
from pipelines.datasets.meta import META_FILE, DatasetMeta, MetaError, now, read_meta
from pipelines.datasets.settings import DatasetSpec, DatasetsSettings
from trajforge.atomic import staged_dir
from trajforge.errors import ConfigError
from trajforge.lake import Lake

log = logging.getLogger(__name__)
INGEST_FILE = "_ingest.json"
DOWNLOADS = ".downloads"  # beside the datasets: the partial downloads the next run continues (pipelines/datasets/download.py)
NORMALIZED_VERSION = "2"  # bump when the normalized form or an adapter changes: every dataset is normalized again
EXAMPLES = 5  # not-converted records whose location and message _ingest.json keeps


@dataclass
class Ingested:
    name: str
    status: str  # "ingested" or "skipped"
    num_records: int
    sha256: str
    path: str
    not_converted: dict[str, int] = field(default_factory=dict)
    """Records the adapter could not turn into pre/post, by reason."""


def recipe(spec: DatasetSpec, records_per_shard: int) -> str:
    """The hash of what turns the source into the normalized files: another one means normalizing again."""
    relevant = {"version": NORMALIZED_VERSION, "adapter": spec.adapter, "fields": spec.fields and spec.fields.model_dump(),
                "file_format": spec.file_format, "archive_path": spec.archive_path, "language": spec.language, "records_per_shard": records_per_shard,
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
    wanted = recipe(spec, settings.records_per_shard)
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
            counts = _normalize(name, spec, readable, staging / "normalized", settings.records_per_shard, progress, names)
        meta = DatasetMeta(source=name, version=spec.version, license=spec.license, downloaded_at=now(), sha256=fetched.sha256,
                           num_records=counts["records"])
        (staging / INGEST_FILE).write_text(json.dumps({"recipe": wanted, "adapter": spec.adapter, "origin": spec.source,
                                                       "bytes": fetched.size, **counts}, indent=2) + "\n", encoding="utf-8")
        (staging / META_FILE).write_text(meta.to_json(), encoding="utf-8")  # last: a folder with it is complete
    log.info("%s: ingested %d records from %s (sha256 %s)", name, meta.num_records, spec.source, meta.sha256[:12])
    return Ingested(name, "ingested", meta.num_records, meta.sha256, str(folder), counts["not_converted"])


def _normalize(name: str, spec: DatasetSpec, source: Path, out: Path, per_shard: int, progress: bool,
               names: dict[str, str] | None = None) -> dict[str, Any]:
    """Normalize every record under `source` into shards in `out`; `names` shows an unpacked archive's scratch folder
    as the archive in record locations (`archives.readable_source`)."""
    try:
        return _normalize_records(name, spec, source, out, per_shard, progress, names or {})
    except CorruptRecord as exc:
        raise CorruptRecord(shown(str(exc), names or {})) from None


def _normalize_records(name: str, spec: DatasetSpec, source: Path, out: Path, per_shard: int, progress: bool,
                       names: dict[str, str]) -> dict[str, Any]:
    from tqdm import tqdm

    out.mkdir(parents=True, exist_ok=True)
    shard, lines, total, shards = 0, [], 0, 0
    skipped: Counter[str] = Counter()
    examples: list[dict[str, str]] = []
    with tqdm(desc=f"normalize {name}", unit="record", disable=not progress) as bar:
        for where, record in source_records(spec, source):
            where = shown(where, names)
            bar.update()
            try:
                normalized = normalize(name, spec, record, where)
            except Unconvertible as exc:
                skipped[exc.reason] += 1
                if len(examples) < EXAMPLES:
                    examples.append({"reason": exc.reason, "message": str(exc)})
                    log.warning("%s: not converted (%s): %s", name, exc.reason, exc)
                continue
            lines.append(json.dumps(normalized, ensure_ascii=False))
            total += 1
            if len(lines) == per_shard:
                write_shard(out, shard, lines)
                shard, lines, shards = shard + 1, [], shards + 1
    if lines or not total:
        write_shard(out, shard, lines)
        shards += 1
    if skipped:
        log.warning("%s: %d records not converted to pre/post (%s); see _ingest.json and the report", name, sum(skipped.values()),
                    ", ".join(f"{reason} {count}" for reason, count in sorted(skipped.items())))
    return {"records": total, "shards": shards, "not_converted": dict(sorted(skipped.items())), "not_converted_examples": examples}


def write_shard(out: Path, index: int, lines: list[str]) -> Path:
    path = out / f"part-{index:05d}.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


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
