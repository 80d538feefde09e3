"""The build's settings: `configs/pipeline.yaml` (section `build:`), environment, then `--set build.x=v`."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from trajforge.constants import QUALITY_TIERS
from trajforge.contracts.curated import ROWS_VERSION, SCHEMAS
from trajforge.redaction import RedactionSettings
from trajforge.redaction.switch import REDACT_ENV, redaction_on
from trajforge.settings import load_section

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "pipeline.yaml"
log = logging.getLogger(__name__)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EmbeddingSettings(_Section):
    enabled: bool = True
    model: str = "packaged"
    actors: int = Field(default=1, ge=1)
    num_gpus: float = Field(default=0, ge=0)
    cpus: float = Field(default=1.0, ge=0)
    batch_size: int = Field(default=256, ge=1)


class DedupSettings(_Section):
    shingle_size: int = Field(default=5, ge=1, le=64)
    num_perm: int = Field(default=128, ge=16, le=1024)
    threshold: float = Field(default=0.8, gt=0, le=1)
    seed: int = 1


class SftSettings(_Section):
    tiers: list[str] = Field(default_factory=lambda: ["TIER_A", "TIER_B"])
    dev_fraction: float = Field(default=0.05, ge=0, lt=1)
    system_prompt: str = "You are a coding agent working in a software repository."
    telemetry_turns: bool = True
    """Starcode `conversation.turn` events (POST /v1/events) become sft rows too (without tier or score)."""

    def model_post_init(self, __context: Any) -> None:
        unknown = sorted(set(self.tiers) - set(QUALITY_TIERS))
        if unknown:
            raise ValueError(f"unknown tiers {unknown}; choose from {list(QUALITY_TIERS)}")


class DatasetRowsSettings(_Section):
    """The public code-edit datasets' processed splits (`lake/processed/datasets/`, from `trajforge datasets`) as sft rows."""

    enabled: bool = True
    """On: a build reads the processed splits when `<lake>/processed/datasets/manifest.json` exists (nothing happens without it)."""
    system_prompt: str = "You are a coding agent. Make the requested change to the code and reply with the complete code after the change."
    """The system turn of every dataset row (empty: none)."""
    train_share: dict[str, float] = Field(default_factory=dict)
    """Dataset -> the share (0..1) of its train records taken, a stable sample by their sha256 (0: none); dev rows are all kept."""
    bytes_per_task: int = Field(default=64 << 20, ge=1)
    """Bytes of a processed split one Ray task renders, redacts and counts."""

    @field_validator("train_share")
    @classmethod
    def _shares(cls, value: dict[str, float]) -> dict[str, float]:
        wrong = sorted(name for name, share in value.items() if not 0 <= share <= 1)
        if wrong:
            raise ValueError(f"shares of {wrong} are not between 0 and 1 (a share above 1 would repeat rows: weight the build in the learner instead)")
        return value


class BuildSettings(_Section):
    lake: Path = Path("./lake")
    sessions_per_batch: int = Field(default=256, ge=1)
    workers: int = Field(default=2, ge=1)
    cpus_per_task: float = Field(default=1.0, gt=0)
    open_session_grace_s: float = Field(default=86400, ge=0)
    rows_per_file: int = Field(default=50000, ge=1)
    tokenizer: str = "packaged"
    embedding: EmbeddingSettings = Field(default_factory=EmbeddingSettings)
    dedup: DedupSettings = Field(default_factory=DedupSettings)
    sft: SftSettings = Field(default_factory=SftSettings)
    redaction: RedactionSettings = Field(default_factory=RedactionSettings)
    datasets: DatasetRowsSettings = Field(default_factory=DatasetRowsSettings)
    orgs: dict[str, list[str]] = Field(default_factory=dict)
    """Organization -> its contributor ids, for `--org` (Starcode's TRAINING_ORG_ID filter)."""

    def content_hash(self, org: str | None = None) -> str:
        """The hash of everything that changes the rows of a build (of the whole lake, or `--org org`): not where the
        lake is or how parallel, nor the contributor lists of organizations the build does not filter by. `datasets` is left
        out: it changes only the dataset rows, whose own key (`dataset_stage.rows_key`) decides whether they are made again."""
        relevant = self.model_dump(mode="json", exclude={"lake", "workers", "cpus_per_task", "sessions_per_batch", "rows_per_file", "orgs",
                                                         "datasets"})
        relevant["rows"] = [ROWS_VERSION, *(str(schema) for schema in SCHEMAS.values())]  # rows an older version derived differ
        relevant["tokenizer"] = model_fingerprint(self.tokenizer)
        relevant["embedding"] = {"enabled": self.embedding.enabled, "model": model_fingerprint(self.embedding.model)}
        if org is not None:
            relevant["org_contributors"] = sorted(self.orgs.get(org, []))
        return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


def model_fingerprint(name: str) -> str:
    """What a tokenizer or model setting contributes to the config hash: a name (`packaged`, a hub id) as it is; a
    local folder or file by its content (the sha256 of its files' names, sizes and `tokenizer.json`/`config.json`
    bytes), so moving the project or giving the same folder another path changes nothing, and retraining the
    tokenizer in place makes the next build a full one."""
    path = Path(name).expanduser()
    if not path.exists():
        return name
    digest = hashlib.sha256()
    files = sorted(item for item in path.rglob("*") if item.is_file()) if path.is_dir() else [path]
    for item in files:
        relative = item.relative_to(path).as_posix() if path.is_dir() else item.name
        digest.update(f"{relative}\0{item.stat().st_size}\0".encode())
        if item.name in ("tokenizer.json", "config.json") or not path.is_dir():
            digest.update(item.read_bytes())
    return f"sha256:{digest.hexdigest()}"


def load_build_settings(path: str | Path | None = None, assignments=()) -> BuildSettings:
    """The build's settings: the YAML file, `TRAJFORGE__BUILD__...` variables, `--set` assignments; `TELEMETRY_REDACT=false`
    (as in Starcode) turns redaction off unless an assignment names `build.redaction.kinds` itself."""
    source = Path(path) if path else DEFAULT_CONFIG
    if not redaction_on():
        assignments = [("build.redaction.kinds", []), *assignments]
    return load_section(BuildSettings, source, "build", assignments)


def warn_if_unredacted(settings: BuildSettings) -> None:
    """One warning per build when nothing is redacted, whichever switch did it (`TELEMETRY_REDACT=false`, or
    `build.redaction.kinds: []` by --set, variable or file); loading the settings warns nothing, as the CLI loads them twice."""
    if not settings.redaction.kinds:
        why = f"{REDACT_ENV}={os.environ[REDACT_ENV]}" if not redaction_on() else "build.redaction.kinds is empty"
        log.warning("%s: the build keeps secrets and personal data verbatim", why)
