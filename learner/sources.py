"""The builds a run trains on: resolved, checked against their manifests, cached as memory-mappable Arrow files.

Every `sft/part-*.parquet` the manifest lists must exist with the size and sha256 the manifest
records; anything else stops the start with a LakeCorruption that names the file and what to do.
The rows the learner can use (at least one message marked for loss) are then written once, per
split, to `<cache>/<build id>-<digest>/{train,dev}.arrow`, uncompressed Arrow IPC: the workers of a
node map the same file (the page cache is shared) and read any row by index without decoding
Parquet again. The digest covers the files' sha256, so a rebuilt build gets a new cache. A cache
folder is filled under a hidden temporary name (`.<build id>-<digest>-<random>`), fsync'd and renamed
into place, so a kill leaves none, never a partial one; two processes caching the same build at once
both end up with the first one's folder. The process filling a temporary folder holds an exclusive
flock on it until it is published; the kernel drops it when the process dies, so `prepare_source`
removes (and logs) every temporary folder whose lock it can take: what a killed process left. Where
the filesystem has no flock (NFS), such folders are left alone: nothing proves their writer dead.

What the check does not protect against: a build whose manifest was rewritten to match damaged
files; the sha256 proves the files are the ones the manifest names, not that the build was right.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from trajforge.atomic import publish_dir
from trajforge.contracts.curated import SFT
from trajforge.errors import LakeCorruption, TrajforgeError
from trajforge.lake import Lake, check_listed_file

log = logging.getLogger(__name__)
COLUMNS = ("example_id", "split", "messages")
CACHED = pa.schema([SFT.field("example_id"), SFT.field("messages")])
SPLITS = ("train", "dev")
STAGING = re.compile(r"\..+-[0-9a-f]{12}-[a-z0-9_]{8}")  # `_staging`'s folders: `.<build id>-<digest>-<mkdtemp's 8 characters>`


@dataclass(frozen=True)
class Source:
    """One build's usable sft rows, cached; `weight` is its share of the training stream."""

    build_id: str
    build_dir: str
    weight: float
    cache_dir: str
    train_rows: int
    dev_rows: int

    def path(self, split: str) -> Path:
        return Path(self.cache_dir) / f"{split}.arrow"

    def as_dict(self) -> dict:
        return asdict(self)


def read_manifest(build_dir: Path) -> dict:
    try:
        manifest = json.loads((build_dir / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise LakeCorruption(f"{build_dir / 'manifest.json'} cannot be read ({exc}); rebuild with `trajforge build`") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
        raise LakeCorruption(f"{build_dir / 'manifest.json'} has no `files` list; rebuild with `trajforge build`")
    return manifest


def verify_sft_files(build_dir: Path, manifest: dict) -> list[dict]:
    """The manifest's sft entries, each checked on disk (exists, size, sha256); raises LakeCorruption naming the file."""
    entries = [entry for entry in manifest["files"] if str(entry.get("path", "")).startswith("sft/")]
    if not entries:
        raise LakeCorruption(f"{build_dir}: manifest.json lists no sft files; rebuild with `trajforge build`")
    for entry in entries:
        check_listed_file(build_dir, entry, checksum=True)
    return entries


def _batches(build_dir: Path, entries: list[dict]) -> Iterator[pa.RecordBatch]:
    for entry in entries:
        path = build_dir / entry["path"]
        try:
            reader = pq.ParquetFile(path)
            missing = [name for name in COLUMNS if name not in reader.schema_arrow.names]
            if missing:
                raise LakeCorruption(f"{path} has no column(s) {missing}: not an sft table of this version; rebuild with `trajforge build --full`")
            for batch in reader.iter_batches(columns=list(COLUMNS), batch_size=4096):
                yield batch
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


def _same_folder(path: Path, fd: int) -> bool:
    """Is `fd` (an open folder) still the one at `path` (not renamed away or removed since it was opened)?"""
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _staging(target: Path) -> tuple[Path, int]:
    """A new temporary folder beside `target` and an open descriptor of it holding its exclusive flock."""
    while True:
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        fd = os.open(staging, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # waits only while `remove_dead_staging`, which took it first, removes the folder
        except OSError:  # no flock on this filesystem: the folder is filled unlocked, and no cleanup will touch it
            return staging, fd
        if _same_folder(staging, fd):
            return staging, fd
        os.close(fd)  # removed as a leftover in the instant before this process locked it: make another


def remove_dead_staging(cache_root: Path) -> list[str]:
    """Remove the temporary folders of cache builds killed midway: those in `cache_root` whose flock no process holds
    (a live `_write_cache` holds its folder's until the folder is published). Returns their names, which it logs."""
    removed = []
    for path in sorted(cache_root.iterdir()) if cache_root.is_dir() else []:
        if not STAGING.fullmatch(path.name) or path.is_symlink() or not path.is_dir():
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            continue  # published or removed meanwhile
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError: its writer is alive
            if _same_folder(path, fd):
                shutil.rmtree(path)
                removed.append(path.name)
        except OSError as exc:
            if not isinstance(exc, BlockingIOError):
                log.warning("cannot tell whether %s is a leftover of a killed cache build (%s): left as it is", path, exc)
        finally:
            os.close(fd)
    if removed:
        log.warning("removed %d half-written cache folder(s) of killed cache builds from %s: %s", len(removed), cache_root, ", ".join(removed))
    return removed


def _write_cache(build_dir: Path, entries: list[dict], target: Path) -> dict[str, int]:
    target.parent.mkdir(parents=True, exist_ok=True)
    staging, lock = _staging(target)
    try:
        return _fill_and_publish(build_dir, entries, staging, target)
    finally:
        os.close(lock)  # after the rename: a published folder has no temporary name, so nothing removes it


def _fill_and_publish(build_dir: Path, entries: list[dict], staging: Path, target: Path) -> dict[str, int]:
    import pyarrow.compute as pc

    counts = dict.fromkeys(SPLITS, 0)
    try:
        writers = {split: pa.ipc.new_file(str(staging / f"{split}.arrow"), CACHED) for split in SPLITS}
        for batch in _batches(build_dir, entries):
            keep = _has_loss(batch.column("messages"))
            for split in SPLITS:
                chosen = batch.filter(pc.and_(pc.equal(batch.column("split"), split), keep))
                if chosen.num_rows:
                    writers[split].write_batch(pa.RecordBatch.from_arrays([chosen.column(0), chosen.column(2)], schema=CACHED))
                    counts[split] += chosen.num_rows
        for writer in writers.values():
            writer.close()
        (staging / "rows.json").write_text(json.dumps(counts) + "\n")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    try:
        publish_dir(staging, target, replace=False)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not (target / "rows.json").is_file():
            raise
        log.info("%s was cached meanwhile by another process: using that copy", target)  # the same files give the same rows
        return json.loads((target / "rows.json").read_text())
    return counts


def prepare_source(lake: Lake, build: str, weight: float, cache_root: Path) -> Source:
    """Resolve, verify and cache one build (the cache is reused when the files are the same)."""
    build_dir = lake.resolve_build(build)
    manifest = read_manifest(build_dir)
    entries = verify_sft_files(build_dir, manifest)
    build_id = str(manifest.get("build_id") or build_dir.name)
    digest = hashlib.sha256("".join(str(entry.get("sha256", entry["path"])) for entry in entries).encode()).hexdigest()[:12]
    target = cache_root / f"{build_id}-{digest}"
    remove_dead_staging(cache_root)
    if (target / "rows.json").is_file():
        counts = json.loads((target / "rows.json").read_text())
    else:
        log.info("caching the sft rows of build %s in %s", build_id, target)
        counts = _write_cache(build_dir, entries, target)
    if counts["train"] == 0:
        raise TrajforgeError(f"build {build_id} ({build_dir}) has no train rows with a message marked for loss; nothing to learn from")
    return Source(build_id, str(build_dir), weight, str(target), counts["train"], counts["dev"])


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
