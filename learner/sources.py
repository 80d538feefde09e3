"""The builds a run trains on: resolved, checked against their manifests, cached as memory-mappable Arrow files.

Every `sft/part-*.parquet` the manifest lists must exist with the size and sha256 the manifest
records; anything else stops the start with a LakeCorruption that names the file and what to do.
The rows the learner can use (at least one message marked for loss) are then written once, per
split, to `<cache>/<build id>-<digest>/{train,dev}.arrow`, uncompressed Arrow IPC: the workers of a
node map the same file (the page cache is shared) and read any row by index without decoding
Parquet again. The digest covers the files' sha256, so a rebuilt build gets a new cache. A cache
folder is filled under a hidden temporary name and renamed into place (`trajforge.atomic.staged_dir`),
so a kill leaves none, never a partial one; two processes caching the same build at once both end up
with the first one's folder. `prepare_source` removes (and logs) the temporary folders that killed
cache builds left (`trajforge.atomic.remove_leftovers_in`: those whose writer's flock is gone), and makes a
cache folder again, with a warning, when its files no longer hold the rows its rows.json counts.

A build published to shared or object storage (`s3://bucket/prefix/<build id>`, `.../latest`; learner/published.py) is
checked the same way while its sft files download, into the cache's temporary folder, only when no cache of it is here
yet; a worker whose node does not see the driver's cache makes it again from the URI (`ensure_on_this_node`).

What the check does not protect against: a build whose manifest was rewritten to match damaged
files; the sha256 proves the files are the ones the manifest names, not that the build was right.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from trajforge.atomic import remove_leftovers_in, staged_dir
from trajforge.contracts.curated import SFT
from trajforge.errors import ConfigError, LakeCorruption, TrajforgeError
from trajforge.lake import Lake, check_listed_file, read_build_manifest
from trajforge.lake_fs import is_uri, with_name

log = logging.getLogger(__name__)
COLUMNS = ("example_id", "split", "messages")
CACHED = pa.schema([SFT.field("example_id"), SFT.field("messages")])
SPLITS = ("train", "dev")


@dataclass(frozen=True)
class Source:
    """One build's usable sft rows, cached; `weight` is its share of the training stream."""

    build_id: str
    build_dir: str
    weight: float
    cache_dir: str
    train_rows: int
    dev_rows: int
    where: str | None = None  # the rows' condition (BuildMix.where)

    def path(self, split: str) -> Path:
        return Path(self.cache_dir) / f"{split}.arrow"

    def as_dict(self) -> dict:
        return asdict(self)


def sft_entries(where: Path | str, manifest: dict) -> list[dict]:
    """The manifest's sft entries (a LakeCorruption when it lists none, or one whose path leaves `sft/`: a manifest
    in a shared bucket is written by whoever can write there, and its paths become paths on this disk)."""
    entries = [entry for entry in manifest["files"] if str(entry.get("path", "")).startswith("sft/")]
    if not entries:
        raise LakeCorruption(f"{where}: manifest.json lists no sft files; rebuild with `trajforge build`")
    for entry in entries:
        parts = str(entry["path"]).split("/")[1:]
        if not all(part and part not in (".", "..") and "\0" not in part for part in parts):
            raise LakeCorruption(f"{where}: manifest.json lists {entry['path']!r}, which is no file of a build's sft folder; "
                                 "rebuild and publish the build again")
    return entries


BUILD_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def checked_build_id(where: Path | str, build_id: str) -> str:
    """`build_id` as the manifest gives it, which names the build's cache folder: a LakeCorruption when it could name
    a folder elsewhere."""
    if not BUILD_ID.fullmatch(build_id):
        raise LakeCorruption(f"{where}: manifest.json's build_id {build_id!r} is no build id (letters, digits, '.', '_' and '-'); "
                             "rebuild and publish the build again")
    return build_id


def verify_sft_files(build_dir: Path, manifest: dict) -> list[dict]:
    """The manifest's sft entries, each checked on disk (exists, size, sha256); raises LakeCorruption naming the file."""
    entries = sft_entries(build_dir, manifest)
    for entry in entries:
        check_listed_file(build_dir, entry, checksum=True)
    return entries


def chosen_ids(path: Path, where: str) -> pa.Array:
    """The example ids of the rows of one sft file that `where` keeps; a ConfigError naming the condition when DuckDB
    cannot evaluate it."""
    import duckdb

    query = f"SELECT example_id FROM read_parquet(?) WHERE ({where})"
    try:
        with duckdb.connect() as con:
            return con.sql(query, params=[str(path)]).to_arrow_table().column("example_id").combine_chunks()
    except duckdb.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"learner.data.builds[].where {where!r}: DuckDB cannot use it on the sft rows ({first}); write a SQL "
                          "condition over the sft table's columns, e.g. source = 'teacher' AND provenance.outcome IS DISTINCT FROM "
                          "'rejected' (trajforge/contracts/curated.py lists them)") from None


def _batches(build_dir: Path, entries: list[dict], where: str | None = None) -> Iterator[pa.RecordBatch]:
    """The sft rows' usable columns, file by file; with `where`, only the rows it keeps."""
    import pyarrow.compute as pc

    for entry in entries:
        path = build_dir / entry["path"]
        try:
            reader = pq.ParquetFile(path)
            missing = [name for name in COLUMNS if name not in reader.schema_arrow.names]
            if missing:
                raise LakeCorruption(f"{path} has no column(s) {missing}: not an sft table of this version; rebuild with `trajforge build --full`")
            keep = chosen_ids(path, where) if where else None
            for batch in reader.iter_batches(columns=list(COLUMNS), batch_size=4096):
                yield batch if keep is None else batch.filter(pc.is_in(batch.column("example_id"), value_set=keep))
        except TrajforgeError:
            raise  # already says what is wrong with the file (LakeCorruption is an OSError too)
        except (pa.ArrowException, OSError) as exc:
            raise LakeCorruption(f"{path} cannot be read as Parquet ({exc}); restore it or rebuild with `trajforge build --full`") from None


def _has_loss(messages: pa.Array) -> pa.Array:
    """Per row: does any message have loss = true (null counts as false)."""
    import numpy as np
    import pyarrow.compute as pc

    flags = pc.fill_null(pc.struct_field(pc.list_flatten(messages), "loss"), False)
    hits = pc.filter(pc.list_parent_indices(messages), flags).to_numpy(zero_copy_only=False)
    mask = np.zeros(len(messages), dtype=bool)
    mask[hits] = True
    return pa.array(mask)


def _write_cache(build_dir: Path | None, entries: list[dict], target: Path, *, replace: bool = False,
                 fetch: Callable[[Path], Path] | None = None, where: str | None = None) -> dict[str, int]:
    """Fill `target`'s cache folder under a temporary name and publish it; when another process published it meanwhile
    (the same files give the same rows), use that copy. `replace`: publish over a damaged copy. `fetch` (a published
    build): downloads and verifies the files into the folder it is given, inside the temporary one, and returns it."""
    import pyarrow.compute as pc

    counts = dict.fromkeys(SPLITS, 0)
    try:
        with staged_dir(target, replace=replace) as staging:
            if fetch is not None:
                build_dir = fetch(staging / "_download")
            writers = {split: pa.ipc.new_file(str(staging / f"{split}.arrow"), CACHED) for split in SPLITS}
            for batch in _batches(build_dir, entries, where):
                keep = _has_loss(batch.column("messages"))
                for split in SPLITS:
                    chosen = batch.filter(pc.and_(pc.equal(batch.column("split"), split), keep))
                    if chosen.num_rows:
                        writers[split].write_batch(pa.RecordBatch.from_arrays([chosen.column(0), chosen.column(2)], schema=CACHED))
                        counts[split] += chosen.num_rows
            for writer in writers.values():
                writer.close()
            if fetch is not None:
                shutil.rmtree(build_dir)
            (staging / "rows.json").write_text(json.dumps(counts) + "\n")
    except OSError:
        if not (target / "rows.json").is_file():
            raise
        log.info("%s was cached meanwhile by another process: using that copy", target)
        return json.loads((target / "rows.json").read_text())
    return counts


def prepare_source(lake: Lake, build: str, weight: float, cache_root: Path, where: str | None = None) -> Source:
    """Resolve, verify and cache one build (the cache is reused when the files and `where` are the same). `build` may be
    a URI of a published build (`s3://bucket/prefix/<id>`, `.../latest`): its sft files are downloaded and checked
    against its manifest only when no cache of them is here yet (the cache's name covers their sha256). `where` keeps
    only the rows a DuckDB condition over the sft columns keeps (BuildMix.where)."""
    fetch = None
    if is_uri(build):
        from learner.published import download, open_published

        folder, manifest = open_published(build)
        build_dir, entries = folder.uri, sft_entries(folder.uri, manifest)
        build_id = checked_build_id(folder.uri, str(manifest.get("build_id") or folder.name))
        fetch = functools.partial(download, folder, entries)
    else:
        build_dir = lake.resolve_build(build)
        manifest = read_build_manifest(build_dir)
        entries = verify_sft_files(build_dir, manifest)
        build_id = checked_build_id(build_dir, str(manifest.get("build_id") or build_dir.name))
    named = "".join(str(entry.get("sha256", entry["path"])) for entry in entries) + (f"\0where\0{where}" if where else "")
    digest = hashlib.sha256(named.encode()).hexdigest()[:12]
    target = cache_root / f"{build_id}-{digest}"
    remove_leftovers_in(cache_root)
    counts = cached_counts(target) if (target / "rows.json").is_file() else None
    if counts is None:
        damaged = (target / "rows.json").is_file()
        if damaged:
            log.warning("the cache %s is damaged (its files do not hold the rows rows.json counts): caching build %s again", target, build_id)
        else:
            log.info("caching the sft rows of build %s in %s", build_id, target)
        counts = _write_cache(None if fetch else build_dir, entries, target, replace=damaged, fetch=fetch, where=where)
    if counts["train"] == 0:
        if where:
            raise TrajforgeError(f"build {build_id} ({build_dir}) has no train row that learner.data.builds[].where {where!r} keeps "
                                 f"({counts['dev']} dev rows): loosen the condition, or name another build")
        raise TrajforgeError(nothing_to_learn(build_id, build_dir, manifest, entries, counts["dev"]))
    if where:
        log.info("build %s: %d train and %d dev rows where %s", build_id, counts["train"], counts["dev"], where)
    return Source(build_id, str(build_dir), weight, str(target), counts["train"], counts["dev"], where)


def nothing_to_learn(build_id: str, build_dir: Path | str, manifest: dict, entries: list[dict], dev_rows: int) -> str:
    """Why a build gives no train row, and what to do: an empty sft table is explained from what its manifest says."""
    rows = sum(int(entry.get("rows") or 0) for entry in entries)
    if rows:
        return (f"build {build_id} ({build_dir}) has {rows} sft rows but no train row with a message marked for loss ({dev_rows} usable dev "
                "rows), so nothing to learn from; build it from more sessions (or a lower build.sft.dev_fraction), or name another build")
    config = manifest.get("config") if isinstance(manifest.get("config"), dict) else {}
    tiers = (config.get("sft") or {}).get("tiers")
    facts = [f"it was built with build.sft.tiers [{', '.join(map(str, tiers))}]"] if tiers else []
    if isinstance(manifest.get("tiers"), dict):
        facts.append("its sessions by tier: " + ", ".join(f"{tier} {count}" for tier, count in manifest["tiers"].items()))
    if manifest.get("exclusions"):
        facts.append("excluded from training: " + ", ".join(f"{reason} {count}" for reason, count in manifest["exclusions"].items()))
    pending = (manifest.get("sessions") or {}).get("pending_open")
    if pending:
        facts.append(f"{pending} sessions still open (built once closed or past build.open_session_grace_s)")
    return (f"build {build_id} ({build_dir}) has an empty sft table, so nothing to learn from: sft rows come from training-eligible field "
            "sessions of the tiers in build.sft.tiers and from telemetry turns (build.sft.telemetry_turns)"
            + (f"; {'; '.join(facts)}" if facts else "")
            + ". Ingest more sessions or widen build.sft.tiers (configs/pipeline.yaml) and run `trajforge build` again, "
            "or train on another build (--build, learner.data.builds)")


def cached_counts(target: Path) -> dict[str, int] | None:
    """The rows per split of a cache folder, or None when its files do not hold them (truncated, overwritten, missing).

    Reads only the Arrow files' footers and batch headers (memory-mapped); the workers would otherwise fail on them."""
    try:
        counts = json.loads((target / "rows.json").read_text())
        for split in SPLITS:
            reader = pa.ipc.open_file(pa.memory_map(str(target / f"{split}.arrow")))
            if sum(reader.get_batch(index).num_rows for index in range(reader.num_record_batches)) != counts[split]:
                return None
    except (OSError, ValueError, KeyError, TypeError, pa.ArrowException):
        return None
    return counts


def open_split(source: Source, split: str) -> pa.Table:
    """The cached rows of one split, memory-mapped (no copy)."""
    return pa.ipc.open_file(pa.memory_map(str(source.path(split)))).read_all()


def sample_texts(source: Source, limit: int = 2000) -> Iterator[str]:
    """Message contents of the first `limit` train rows: text to train the embedded model's tokenizer on."""
    table = open_split(source, "train")
    for messages in table.column("messages").slice(0, limit).to_pylist():
        for message in messages:
            if message.get("content"):
                yield message["content"]


def ensure_on_this_node(source: Source, build: str) -> Source:
    """On a worker, before it opens the cache: a worker whose node does not see the driver's cache folder (a learner
    node that shares no disk with the head) makes it again from the published build `build` (the same URI), downloaded,
    verified and cached the same way (the build the driver resolved, even when LATEST moved since); it must still have the
    files the driver cached."""
    if not is_uri(build) or cached_counts(Path(source.cache_dir)) is not None:
        return source
    log.warning("the cache %s of build %s is not on this node: downloading the build again from %s", source.cache_dir, source.build_id,
                source.build_dir)
    made = prepare_source(Lake.at("."), with_name(build, source.build_id), source.weight, Path(source.cache_dir).parent,  # not a newer LATEST
                          source.where)
    if made.cache_dir != source.cache_dir or (made.train_rows, made.dev_rows) != (source.train_rows, source.dev_rows):
        raise LakeCorruption(f"{source.build_dir} no longer holds the files the driver cached as {source.cache_dir} (it was published "
                             "again with other files): start the run again")
    return source
