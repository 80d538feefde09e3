"""`_meta.json`, exactly the contract of seed 002 section 3.1, beside every ingested dataset:

    {"source": "<dataset name>", "version": "<semver or commit hash>", "license": "<SPDX identifier>",
     "downloaded_at": "ISO8601 timestamp", "sha256": "<archive hash>", "num_records": 12345}

Reading one that lacks a field, has another, or has a malformed one is a `MetaError` naming the file and the field.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictInt, ValidationError, field_validator

from trajforge.errors import LakeCorruption

META_FILE = "_meta.json"


class MetaError(LakeCorruption):
    """A `_meta.json` that does not hold the contract: the message names the file and each bad field."""


class DatasetMeta(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(min_length=1)
    version: str = Field(min_length=1)
    license: str = Field(min_length=1)
    downloaded_at: AwareDatetime
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    num_records: StrictInt = Field(ge=0)

    @field_validator("license")
    @classmethod
    def _spdx(cls, value: str) -> str:
        from pipelines.datasets.settings import SPDX

        if not SPDX.fullmatch(value):
            raise ValueError("not an SPDX licence identifier or expression")
        return value

    def to_json(self) -> str:
        data = self.model_dump(mode="json")
        data["downloaded_at"] = self.downloaded_at.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
        return json.dumps(data, indent=2) + "\n"


def now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def parse_meta(text: str, where: str) -> DatasetMeta:
    """The metadata in `text` (read from `where`), or a MetaError naming each missing or malformed field."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise MetaError(f"{where}: not JSON ({exc}); ingest the dataset again (`trajforge datasets --force --only NAME`)") from None
    if not isinstance(data, dict):
        raise MetaError(f"{where}: expected a JSON object with source, version, license, downloaded_at, sha256, num_records")
    try:
        return DatasetMeta.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            field = ".".join(str(part) for part in error["loc"]) or "(object)"
            if error["type"] == "missing":
                problems.append(f"{field}: missing")
            elif error["type"] == "extra_forbidden":
                problems.append(f"{field}: not a field of the contract")
            else:
                problems.append(f"{field}: {error['msg']} (got {error.get('input')!r})")
        raise MetaError(f"{where}: invalid dataset metadata: " + "; ".join(problems)) from None


def read_meta(folder_or_file: str | Path) -> DatasetMeta:
    """The `_meta.json` of a dataset folder (or the file itself)."""
    path = Path(folder_or_file)
    path = path / META_FILE if path.is_dir() else path
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MetaError(f"{path}: missing; the dataset was never ingested completely: run `trajforge datasets --only "
                        f"{path.parent.name}`") from None
    return parse_meta(text, str(path))
