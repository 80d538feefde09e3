"""Builders for the datasets job's tests: a config file naming datasets, and small datasets in the `fields` layout."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "examples" / "datasets"
FIELDS = {"instruction": "instruction", "pre": "pre", "post": "post", "language": "language", "path": "path"}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


def edit(instruction: str, pre: str, post: str, language: str = "python", path: str | None = "src/app.py") -> dict[str, Any]:
    record = {"instruction": instruction, "pre": pre, "post": post, "language": language}
    if path:
        record["path"] = path
    return record


def fields_dataset(source: Path, **extra: Any) -> dict[str, Any]:
    return {"source": str(source), "adapter": "fields", "fields": FIELDS, "license": "Apache-2.0", "version": "1", **extra}


def config(tmp_path: Path, catalog: dict[str, dict[str, Any]], **settings: Any) -> Path:
    """A datasets config in `tmp_path` whose lake and reports are there too."""
    body = {"lake": str(tmp_path / "lake"), "reports": str(tmp_path / "reports"), "workers": 2, "cpus_per_task": 0.05,
            **settings, "catalog": catalog}
    path = tmp_path / "datasets.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"datasets": body}, sort_keys=False), encoding="utf-8")
    return path


def sample_catalog() -> dict[str, dict[str, Any]]:
    """The shipped samples (configs/datasets.yaml's catalog) with absolute sources."""
    shipped = yaml.safe_load((REPO / "configs" / "datasets.yaml").read_text())["datasets"]["catalog"]
    return {name: {**spec, "source": str(REPO / spec["source"])} for name, spec in shipped.items()}


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
