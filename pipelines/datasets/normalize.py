"""A fetched dataset's records in the common form, as `normalized/part-NNNNN.jsonl` shards of `records_per_shard`.

A source of several data files (AgentPack's `train/*.jsonl.gz` shards, EditPackFT's Parquet parts, a folder of
CommitPackFT languages), and a plain JSON-lines file over `split_mb` (CommitPackFT's one file per language), cut into
pieces at line starts, is normalized one file or piece per Ray task when the driver is connected to Ray (`trajforge
datasets` is), each pinned to the driver's node, whose disk holds the staging folder; otherwise, and for a source its
adapter reads whole (SmellyCode's repository), in this process. Either way each file's or piece's records start a new
shard and the shards are numbered in order, so the files are the same whichever way they were made.

A record the adapter cannot turn into pre/post (`Unconvertible`) is counted by reason, its first few locations and
messages kept (`not_converted_examples`); a record without what its layout requires stops the dataset (`CorruptRecord`).
Record locations show `names`' labels instead of scratch and staging folders (`archives.shown`).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from pipelines.datasets.adapters import CorruptRecord, Unconvertible, normalize, source_records
from pipelines.datasets.archives import shown
from pipelines.datasets.readers import data_files, file_format, jsonl_ranges, read_jsonl_range
from pipelines.datasets.settings import DatasetSpec

log = logging.getLogger(__name__)
EXAMPLES = 5  # not-converted records whose location and message _ingest.json keeps
WHOLE_SOURCE_ADAPTERS = ("smellycode",)  # read the source folder as one (a repository with its annotations)


def write_shard(out: Path, index: int, lines: list[str]) -> Path:
    path = out / f"part-{index:05d}.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def normalize_part(name: str, spec_json: str, source: str, out: str, per_shard: int, names: dict[str, str],
                   progress: bool = False, byte_range: tuple[int, int, int] | None = None) -> dict[str, Any]:
    """Normalize the records of one file (or a whole-source folder, or `byte_range` of a JSON-lines file: start, end,
    first line number) into `out/part-*.jsonl`; the counts. A Ray task's body."""
    from tqdm import tqdm

    spec = DatasetSpec.model_validate_json(spec_json)
    records = read_jsonl_range(Path(source), *byte_range) if byte_range else source_records(spec, Path(source))
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    shard, lines, total = 0, [], 0
    skipped: Counter[str] = Counter()
    examples: list[dict[str, str]] = []
    try:
        with tqdm(desc=f"normalize {name}", unit="record", disable=not progress) as bar:
            for where, record in records:
                bar.update()
                try:
                    lines.append(json.dumps(normalize(name, spec, record, shown(where, names)), ensure_ascii=False))
                except Unconvertible as exc:
                    skipped[exc.reason] += 1
                    if len(examples) < EXAMPLES:
                        examples.append({"reason": exc.reason, "message": str(exc)})
                        log.warning("%s: not converted (%s): %s", name, exc.reason, exc)
                    continue
                total += 1
                if len(lines) == per_shard:
                    write_shard(folder, shard, lines)
                    shard, lines = shard + 1, []
    except CorruptRecord as exc:
        raise CorruptRecord(shown(str(exc), names)) from None
    if lines:
        write_shard(folder, shard, lines)
    return {"records": total, "not_converted": dict(skipped), "not_converted_examples": examples}


Part = tuple[Path, "tuple[int, int, int] | None"]  # a file, and the byte range of it (start, end, first line) or None: all


def _parts(spec: DatasetSpec, source: Path, split_bytes: int | None) -> list[Part]:
    """What the tasks normalize: each data file of a folder source, and a plain JSON-lines file larger than
    `split_bytes` cut into pieces at line starts; a whole-source adapter's folder as one."""
    if spec.adapter in WHOLE_SOURCE_ADAPTERS:
        return [(source, None)]
    parts: list[Part] = []
    for file in data_files(source, spec.file_format) if source.is_dir() else [source]:
        plain_lines = file_format(file, spec.file_format) == "jsonl" and not file.name.lower().endswith(".gz")
        if split_bytes and plain_lines and file.stat().st_size > split_bytes:
            parts += [(file, piece) for piece in jsonl_ranges(file, split_bytes)]
        else:
            parts.append((file, None))
    return parts


def _run(name: str, spec: DatasetSpec, parts: list[Part], work: Path, per_shard: int, names: dict[str, str], progress: bool,
         cpus: float) -> list[dict[str, Any]]:
    """Each part normalized into `work/<index>/`: Ray tasks on this node when connected to Ray and there are several."""
    import ray

    spec_json = spec.model_dump_json()
    here = ray.get_runtime_context().get_node_id() if len(parts) > 1 and ray.is_initialized() else None
    if here is not None and _node_cpus(here) < cpus:
        log.warning("%s: this node gives Ray tasks %.1f CPUs, under datasets.cpus_per_task=%s (a head node started with "
                    "--num-cpus=0?): normalizing in this process", name, _node_cpus(here), cpus)
        here = None
    if here is None:
        return [normalize_part(name, spec_json, str(path), str(work / f"{index:05d}"), per_shard, names, progress, piece)
                for index, (path, piece) in enumerate(parts)]
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(here, soft=False)
    task = ray.remote(normalize_part).options(num_cpus=cpus, scheduling_strategy=here, max_retries=0)
    log.info("%s: normalizing %d files or pieces in Ray tasks on this node", name, len(parts))
    return ray.get([task.remote(name, spec_json, str(path), str(work / f"{index:05d}"), per_shard, names, False, piece)
                    for index, (path, piece) in enumerate(parts)])


def _node_cpus(node_id: str) -> float:
    """The CPUs Ray gives tasks on this node (0 on a head node started with --num-cpus=0)."""
    import ray

    return next((float(node["Resources"].get("CPU", 0)) for node in ray.nodes() if node["NodeID"] == node_id and node["Alive"]), 0.0)


def normalize_source(name: str, spec: DatasetSpec, source: Path, out: Path, per_shard: int, *, names: dict[str, str] | None = None,
                     progress: bool = True, cpus: float = 1.0, split_bytes: int | None = None) -> dict[str, Any]:
    """Every record under `source` into `out/part-NNNNN.jsonl` (see the module's doc); the counts `_ingest.json` keeps."""
    parts = _parts(spec, source, split_bytes)
    work = out / ".parts"
    results = _run(name, spec, parts, work, per_shard, names or {}, progress, cpus)
    shards = [path for index in range(len(parts)) for path in sorted((work / f"{index:05d}").glob("part-*.jsonl"))]
    for number, path in enumerate(shards):
        path.rename(out / f"part-{number:05d}.jsonl")
    shutil.rmtree(work)
    if not shards:
        write_shard(out, 0, [])  # an empty dataset still has its (empty) shard
    skipped: Counter[str] = Counter()
    for result in results:
        skipped.update(result["not_converted"])
    if skipped:
        log.warning("%s: %d records not converted to pre/post (%s); see _ingest.json and the report", name, sum(skipped.values()),
                    ", ".join(f"{reason} {count}" for reason, count in sorted(skipped.items())))
    return {"records": sum(result["records"] for result in results), "shards": max(1, len(shards)),
            "not_converted": dict(sorted(skipped.items())),
            "not_converted_examples": [example for result in results for example in result["not_converted_examples"]][:EXAMPLES]}
