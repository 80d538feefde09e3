"""A small `lake/processed/datasets/` for the build's tests, in the layout `trajforge datasets` publishes: records with
`task_id`, `dataset`, `num_tokens` and `sha256` per `<language>/<split>.jsonl`, and a manifest with each file's sha256."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pipelines.datasets.process import sample_hash

LICENSES = {"commitpackft": "MIT", "oce_dataft": "Apache-2.0"}


def record(dataset: str, instruction: str, pre: str, post: str, language: str = "python", tags: list[str] | None = None) -> dict[str, Any]:
    content = {"instruction": instruction, "pre": pre, "post": post, "language": language, "tags": [f"dataset:{dataset}", *(tags or [])]}
    digest = sample_hash(content)
    return {"task_id": f"{dataset}-{digest[:16]}", **content, "dataset": dataset, "num_tokens": 10, "sha256": digest}


def write_processed(lake: Path, files: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """`files`: `<language>/<split>.jsonl` -> its records; every other split of those languages is written empty."""
    folder = lake / "processed" / "datasets"
    languages = {path.split("/")[0] for path in files}
    entries, splits = [], {}
    for language in sorted(languages):
        for split in ("train", "dev", "test"):
            relative = f"{language}/{split}.jsonl"
            records = files.get(relative, [])
            path = folder / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records), encoding="utf-8")
            data = path.read_bytes()
            entries.append({"path": relative, "rows": len(records), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
            for r in records:
                splits.setdefault(r["dataset"], {}).setdefault(f"{language}/{split}", 0)
                splits[r["dataset"]][f"{language}/{split}"] += 1
    names = sorted({r["dataset"] for records in files.values() for r in records})
    manifest = {"created_at": "2026-12-07T00:00:00Z", "code_version": "test", "files": entries,
                "inputs": {name: {"source": name, "version": "1", "license": LICENSES.get(name, "Apache-2.0"), "sha256": "0" * 64,
                                  "num_records": sum(splits[name].values())} for name in names},
                "datasets": {name: {"kept": sum(splits[name].values()), "splits": splits[name]} for name in names}}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest
