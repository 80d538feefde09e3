"""The datasets job's settings: `configs/datasets.yaml` (section `datasets:`), `TRAJFORGE__DATASETS__...`, then `--set`.

Each entry of `catalog` (name -> dataset, in the order the job deduplicates them: an input seen in an earlier dataset
wins) says where the dataset comes from (a local file or folder, or an https URL with the sha256 and size of the
official manifest), how its records read (`adapter`), its licence (SPDX) and version.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from trajforge.settings import load_section

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "datasets.yaml"
NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
SHA256 = r"^[0-9a-f]{64}$"
# An SPDX licence expression: identifiers (MIT, Apache-2.0, LicenseRef-x, CC-BY-4.0+) joined by AND/OR/WITH, parentheses.
SPDX_ID = r"(?:LicenseRef-[A-Za-z0-9.-]+|[A-Za-z0-9][A-Za-z0-9.-]*\+?)"
SPDX = re.compile(rf"^\(*{SPDX_ID}\)*(?:\s+(?:AND|OR|WITH)\s+\(*{SPDX_ID}\)*)*$")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FieldMap(_Section):
    """Where the `fields` adapter finds each part of a record: a field name (dotted for nested objects), or a list of
    names of which the first non-empty one counts."""

    instruction: str | list[str]
    pre: str | list[str]
    post: str | list[str]
    language: str | list[str] | None = None
    """The record's language field; without it every record is `dataset.language`."""
    path: str | list[str] | None = None
    """The edited file's name, whose extension confirms the language."""
    tags: list[str] = Field(default_factory=list)
    """Fields whose values become tags `<field>:<value>`."""


class DatasetSpec(_Section):
    source: str
    """A local file or folder (relative to where the command runs), or an https URL (http only on the loopback)."""
    sha256: str | None = Field(default=None, pattern=SHA256)
    """The official manifest's sha256 of the file (of a folder: see `fetch.folder_digest`); required for a URL."""
    size: int | None = Field(default=None, ge=0)
    """The official manifest's size in bytes; required for a URL."""
    adapter: Literal["commitpackft", "editpackft", "opencodeedit", "agentpack", "marv", "smellycode", "fields"]
    """How the records read (`adapters.py`, `layouts.py`): a dataset's own layout, or `fields` with a mapping."""
    fields: FieldMap | None = None
    file_format: Literal["auto", "jsonl", "json", "parquet", "csv"] = "auto"
    archive_path: str | None = Field(default=None, min_length=1)
    """For an archive source (.zip, .tar, .tar.gz, ...): the folder or file inside it to read; default the whole
    archive, entering a single top folder (a GitHub archive's `<repo>-<commit>/`)."""
    language: str | None = None
    """The language of every record, for a dataset without a language field."""
    license: str
    """SPDX identifier or expression of the dataset as a whole (CommitPackFT: MIT; records keep their own as tags)."""
    version: str = Field(min_length=1)
    """A semver or the commit hash of the release."""
    token_env: str | None = None
    """Name of an environment variable holding a bearer token for a gated download (AgentPack)."""
    enabled: bool = True

    @field_validator("license")
    @classmethod
    def _spdx(cls, value: str) -> str:
        if not SPDX.fullmatch(value.strip()):
            raise ValueError("not an SPDX licence identifier or expression (e.g. MIT, Apache-2.0, CC-BY-4.0, MIT OR Apache-2.0)")
        return value.strip()

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        url = urlparse(value)
        if url.scheme in ("", "file") or len(url.scheme) == 1:  # a path (a Windows drive letter is not a scheme)
            return value
        if url.scheme == "http" and url.hostname not in LOOPBACK:
            raise ValueError("plain http is taken only from this machine (127.0.0.1, localhost): use https")
        if url.scheme not in ("http", "https"):
            raise ValueError(f"unsupported scheme {url.scheme!r}: give a local path or an https URL")
        return value

    @property
    def is_url(self) -> bool:
        return urlparse(self.source).scheme in ("http", "https")

    @model_validator(mode="after")
    def _consistent(self) -> "DatasetSpec":
        if self.is_url and (self.sha256 is None or self.size is None):
            raise ValueError("a URL source needs the sha256 and size of the official manifest (sha256: ..., size: ...)")
        if self.adapter == "fields" and self.fields is None:
            raise ValueError("adapter `fields` needs a `fields:` mapping (instruction, pre, post, and language or path)")
        if self.adapter == "fields" and self.fields and self.fields.language is None and self.language is None and self.fields.path is None:
            raise ValueError("adapter `fields` needs fields.language, fields.path or a dataset-wide `language`")
        return self


class SplitRatios(_Section):
    train: float = Field(default=0.9, ge=0, le=1)
    dev: float = Field(default=0.05, ge=0, le=1)
    test: float = Field(default=0.05, ge=0, le=1)

    @model_validator(mode="after")
    def _sum(self) -> "SplitRatios":
        if abs(self.train + self.dev + self.test - 1) > 1e-9:
            raise ValueError(f"train + dev + test must be 1, got {self.train + self.dev + self.test:g}")
        return self


class DownloadSettings(_Section):
    timeout_s: float = Field(default=60, gt=0)
    retries: int = Field(default=3, ge=0)


class DatasetsSettings(_Section):
    lake: Path = Path("./lake")
    reports: Path = Path("./reports/datasets")
    tokenizer: str = "packaged"
    max_input_tokens: int = Field(default=2048, ge=1)
    """Records whose input (instruction and pre) has more tokens are left out (the seed's 2k for week 1)."""
    records_per_shard: int = Field(default=10000, ge=1)
    split_mb: int = Field(default=256, ge=1)
    """A plain JSON-lines file larger than this is normalized in pieces of about this size, one Ray task each."""
    workers: int = Field(default=2, ge=1)
    cpus_per_task: float = Field(default=1.0, gt=0)
    splits: SplitRatios = Field(default_factory=SplitRatios)
    split_salt: str = "trajforge-datasets-1"
    """Mixed into the hash that picks a record's split: change it to draw other splits."""
    languages: dict[str, list[str]] = Field(default_factory=lambda: {
        "python": ["python"], "javascript": ["javascript", "typescript", "tsx"], "java": ["java"]})
    """Output folder -> the languages it holds. Records of other languages are left out."""
    download: DownloadSettings = Field(default_factory=DownloadSettings)
    catalog: dict[str, DatasetSpec] = Field(default_factory=dict)

    @field_validator("catalog")
    @classmethod
    def _names(cls, value: dict[str, DatasetSpec]) -> dict[str, DatasetSpec]:
        for name in value:
            if not NAME.fullmatch(name):
                raise ValueError(f"dataset name {name!r}: lower-case letters, digits, '_', '.', '-' (it names a lake folder)")
        return value

    @field_validator("languages")
    @classmethod
    def _languages(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        from pipelines.datasets.languages import SUPPORTED

        seen: dict[str, str] = {}
        for folder, names in value.items():
            for name in names:
                if name not in SUPPORTED:
                    raise ValueError(f"{folder}: language {name!r} cannot be confirmed; choose from {sorted(SUPPORTED)}")
                if name in seen:
                    raise ValueError(f"language {name!r} is in both {seen[name]} and {folder}")
                seen[name] = folder
        return value

    def bucket_of(self, language: str) -> str | None:
        return next((folder for folder, names in self.languages.items() if language in names), None)

    def enabled(self, only: list[str] | None = None) -> dict[str, DatasetSpec]:
        from trajforge.errors import ConfigError

        unknown = sorted(set(only or []) - set(self.catalog))
        if unknown:
            raise ConfigError(f"--only {', '.join(unknown)}: not in datasets.catalog (known: {', '.join(self.catalog) or 'none'})")
        return {name: spec for name, spec in self.catalog.items() if (name in only if only else spec.enabled)}

    def to_process(self, only: list[str] | None = None) -> list[str]:
        """The datasets a processing run covers, in catalog order: every enabled one and those `only` names. Never only
        the named ones: the output is rewritten whole and deduplicated across all of them."""
        self.enabled(only)  # unknown names are refused
        return [name for name, spec in self.catalog.items() if spec.enabled or name in (only or [])]


def load_datasets_settings(path: str | Path | None = None, assignments=()) -> DatasetsSettings:
    """The YAML file (default configs/datasets.yaml), `TRAJFORGE__DATASETS__...` variables, then `--set datasets.x=y`."""
    return load_section(DatasetsSettings, Path(path) if path else DEFAULT_CONFIG, "datasets", assignments)
