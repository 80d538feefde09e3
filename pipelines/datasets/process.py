"""Processing the ingested datasets into splits per language (seed 002 section 3.2, step 5): a Ray Data job.

1. Every normalized shard of every dataset (in catalog order) is one Ray Data task (`annotate_shard`): it confirms each
   record's language (`languages.confirm`), counts the tokens of its input (instruction and pre, with the project's
   tokenizer, `datasets.tokenizer`) and hashes its `(instruction, pre)` pair.
2. The driver takes the records in a stable order (catalog order, shard, line; Ray Data keeps it with
   `preserve_order`) and keeps the first of every `(instruction, pre)` pair: a later copy, in the same dataset or
   another, is dropped as a duplicate of the first.
3. Each kept record's split comes from the sha256 of the salt and its pair (`split_of`): the same record lands in the
   same split in every run, and identical inputs never straddle two splits.
4. `lake/processed/datasets/<language>/<split>.jsonl` and `manifest.json` are written into a temporary folder and
   renamed into place (`staged_dir`); each record is the common form plus `task_id`, `dataset`, `num_tokens` and its
   `sha256` (the sample hash of section 3.4): a split is a tasks file the actor loop takes as it is (`read_tasks`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from pipelines.datasets.ingest import not_converted, shards
from pipelines.datasets.meta import read_meta
from pipelines.datasets.settings import DatasetsSettings
from trajforge.atomic import staged_dir
from trajforge.errors import ConfigError, LakeCorruption
from trajforge.lake import Lake

log = logging.getLogger(__name__)
SPLITS = ("train", "dev", "test")
_COUNTERS: dict[str, Any] = {}


def pair_key(instruction: str, pre: str) -> str:
    return hashlib.sha256(f"{instruction}\0{pre}".encode("utf-8")).hexdigest()


def split_of(key: str, salt: str, train: float, dev: float) -> str:
    """`train`, `dev` or `test` from the sha256 of `salt` and the pair's key, read as a fraction in [0, 1)."""
    fraction = int.from_bytes(hashlib.sha256(f"{salt}\0{key}".encode()).digest()[:8], "big") / 2**64
    return "train" if fraction < train else "dev" if fraction < train + dev else "test"


def sample_hash(record: dict[str, Any]) -> str:
    """The sha256 of a record's content (instruction, pre, post, language), canonical JSON."""
    content = {key: record[key] for key in ("instruction", "pre", "post", "language")}
    return hashlib.sha256(json.dumps(content, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def _counter(tokenizer: str):
    from pipelines.build.tokens import TokenCounter

    if tokenizer not in _COUNTERS:
        _COUNTERS[tokenizer] = TokenCounter(tokenizer)
    return _COUNTERS[tokenizer]


DAMAGED = "damaged:"


def _normalized(record: Any) -> dict[str, Any]:
    if not (isinstance(record, dict) and all(isinstance(record[key], str) for key in ("instruction", "pre", "post", "language"))
            and isinstance(record["tags"], list)):
        raise ValueError("not a normalized record")
    return record


def annotate_shard(batch: dict[str, Any], tokenizer: str, max_tokens: int, languages: dict[str, list[str]]) -> dict[str, list[Any]]:
    """Ray Data stage: one shard (a row naming its file) -> one row per record, with its language, tokens and reason."""
    from pipelines.datasets.languages import confirm

    out: dict[str, list[Any]] = defaultdict(list)
    buckets = {language: folder for folder, names in languages.items() for language in names}
    for dataset, order, path in zip(batch["dataset"], batch["order"], batch["path"]):
        records, damaged = [], None
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                try:
                    records.append(_normalized(json.loads(line)))
                except (ValueError, TypeError, KeyError):
                    damaged = f"{path}:{number}: not a normalized record: the file is damaged; ingest {dataset} again with --force"
                    break
        if damaged:  # said by the driver (an exception raised here reaches it buried in Ray Data's)
            for column, value in (("dataset", str(dataset)), ("order", ""), ("record", "{}"), ("bucket", ""), ("tokens", 0),
                                  ("reason", f"{DAMAGED}{damaged}"), ("key", "")):
                out[column].append(value)
            continue
        tokens = _counter(tokenizer).count([f"{r['instruction']}\n{r['pre']}" for r in records])
        for number, (record, count) in enumerate(zip(records, tokens), 1):
            language, reason = None, None
            claimed = record["language"]
            if claimed and claimed not in buckets:
                reason = "out_of_scope_language"
            elif count > max_tokens:
                reason = "too_long"
            else:
                language, reason = confirm(claimed, record["tags"], record["pre"], record["post"])
                if language is not None and language not in buckets:
                    language, reason = None, "out_of_scope_language"
            out["dataset"].append(str(dataset))
            out["order"].append(f"{int(order):05d}:{number:09d}")
            out["record"].append(json.dumps({**record, "language": language or claimed}, ensure_ascii=False))
            out["bucket"].append(buckets.get(language, "") if language else "")
            out["tokens"].append(count)
            out["reason"].append(reason or "")
            out["key"].append(pair_key(record["instruction"], record["pre"]))
    return dict(out)


def _inputs(settings: DatasetsSettings, names: list[str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    lake = Lake.at(settings.lake)
    rows, metas = [], {}
    for position, name in enumerate(names):
        folder = lake.raw_dataset(name)
        if not folder.is_dir():
            raise ConfigError(f"dataset {name} is not in {lake.raw_datasets}: run `trajforge datasets --stage ingest --only {name}` first")
        metas[name] = read_meta(folder)
        for index, path in enumerate(shards(folder)):
            rows.append({"dataset": name, "order": position * 10000 + index, "path": str(path)})
    return rows, metas


class SplitWriter:
    """The output files of one run, written as the records come (`<language>/<split>.jsonl` in the staging folder),
    each hashed as it is written."""

    def __init__(self, folder: Path, buckets: list[str]):
        self.folder, self.handles, self.digests, self.rows = folder, {}, {}, Counter()
        for bucket in buckets:
            (folder / bucket).mkdir(parents=True, exist_ok=True)
            for split in SPLITS:
                self.handles[(bucket, split)] = open(folder / bucket / f"{split}.jsonl", "wb")
                self.digests[(bucket, split)] = hashlib.sha256()

    def write(self, bucket: str, split: str, line: str) -> None:
        data = (line + "\n").encode("utf-8")
        self.handles[(bucket, split)].write(data)
        self.digests[(bucket, split)].update(data)
        self.rows[(bucket, split)] += 1

    def close(self) -> list[dict[str, Any]]:
        files = []
        for (bucket, split), handle in self.handles.items():
            handle.close()
            path = self.folder / bucket / f"{split}.jsonl"
            files.append({"path": f"{bucket}/{split}.jsonl", "rows": self.rows[(bucket, split)], "bytes": path.stat().st_size,
                          "sha256": self.digests[(bucket, split)].hexdigest()})
        return files


def process(settings: DatasetsSettings, names: list[str], progress: bool = True) -> dict[str, Any]:
    """Process the ingested datasets `names` (in this order) into `lake/processed/datasets/`, published in one rename;
    returns the manifest (with `datasets`: per dataset stats for the reports)."""
    import ray
    from ray.data import DataContext, TaskPoolStrategy
    from tqdm import tqdm

    from trajforge.cluster import init_ray
    from trajforge.version import code_version

    if not names:
        raise ConfigError("no dataset to process: enable one in datasets.catalog or name it with --only")
    started = time.time()
    rows, metas = _inputs(settings, names)
    _counter(settings.tokenizer)  # a bad tokenizer fails here, in the driver, naming datasets.tokenizer
    init_ray()
    stats = {name: {**_empty_stats(metas[name]), "not_converted": not_converted(Lake.at(settings.lake).raw_dataset(name))} for name in names}
    seen: dict[bytes, str] = {}  # the first 16 bytes of each kept pair's sha256 -> its dataset
    context = DataContext.get_current()
    preserved, context.execution_options.preserve_order = context.execution_options.preserve_order, True
    try:  # the records come back in the order of the shards: the dedup keeps the first by catalog order
        dataset = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
            annotate_shard, batch_size=1, compute=TaskPoolStrategy(size=max(1, min(settings.workers, len(rows)))),
            num_cpus=settings.cpus_per_task,
            fn_kwargs={"tokenizer": settings.tokenizer, "max_tokens": settings.max_input_tokens, "languages": settings.languages})
        with staged_dir(Lake.at(settings.lake).processed_datasets) as staging:
            writer = SplitWriter(staging, list(settings.languages))
            try:
                with tqdm(total=sum(m.num_records for m in metas.values()), desc="process datasets", unit="record", disable=not progress) as bar:
                    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                        for name, raw, bucket, tokens, reason, key in zip(batch["dataset"], batch["record"], batch["bucket"], batch["tokens"],
                                                                          batch["reason"], batch["key"]):
                            _take(stats[str(name)], settings, seen, writer, str(name), json.loads(raw), str(bucket), int(tokens),
                                  str(reason), str(key))
                        bar.update(len(batch["dataset"]))
            finally:
                files = writer.close()
            manifest = {
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "code_version": code_version(),
                "settings": settings.model_dump(mode="json", include={"tokenizer", "max_input_tokens", "splits", "split_salt", "languages"}),
                "inputs": {name: json.loads(meta.to_json()) for name, meta in metas.items()}, "files": files,
                "datasets": {name: _plain(item) for name, item in stats.items()},
            }
            (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    finally:
        context.execution_options.preserve_order = preserved  # the driver's other Ray Data jobs keep their own setting
    manifest["seconds"] = round(time.time() - started, 2)
    return manifest


def _empty_stats(meta: Any) -> dict[str, Any]:
    return {"meta": json.loads(meta.to_json()), "records": 0, "kept": 0, "dropped": Counter(), "duplicate_of": Counter(),
            "languages": Counter(), "splits": Counter(), "input_tokens": 0, "all_input_tokens": 0, "samples": []}


def _take(stats: dict[str, Any], settings: DatasetsSettings, seen: dict[bytes, str], writer: SplitWriter, name: str,
          record: dict[str, Any], bucket: str, tokens: int, reason: str, key: str) -> None:
    if reason.startswith(DAMAGED):
        raise LakeCorruption(reason.removeprefix(DAMAGED))
    stats["records"] += 1
    stats["all_input_tokens"] += tokens
    short = bytes.fromhex(key[:32])
    if not reason and short in seen:
        reason = "duplicate"
        stats["duplicate_of"][seen[short]] += 1
    if reason:
        stats["dropped"][reason] += 1
        return
    seen[short] = name
    split = split_of(key, settings.split_salt, settings.splits.train, settings.splits.dev)
    digest = sample_hash(record)
    row = {"task_id": f"{name}-{digest[:16]}", **record, "dataset": name, "num_tokens": tokens, "sha256": digest}
    writer.write(bucket, split, json.dumps(row, ensure_ascii=False, sort_keys=True))
    stats["kept"] += 1
    stats["input_tokens"] += tokens
    stats["languages"][record["language"]] += 1
    stats["splits"][f"{bucket}/{split}"] += 1
    if len(stats["samples"]) < 5:
        stats["samples"].append(row["task_id"])


def _plain(stats: dict[str, Any]) -> dict[str, Any]:
    return {key: dict(sorted(value.items())) if isinstance(value, Counter) else value for key, value in stats.items()}


def processed_path(settings: DatasetsSettings) -> Path:
    return Lake.at(settings.lake).processed_datasets
