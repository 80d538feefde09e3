"""Reading a dataset's records and turning each into the common form of seed 002 section 3.2:

    {"instruction": str, "pre": str, "post": str, "language": str, "tags": [str]}

Files: JSON lines (`.jsonl`, `.jsonl.gz`), a JSON array (`.json`), Parquet (`.parquet`); a folder is read file by file
in name order. Adapters:
- `commitpackft`: bigcode/commitpackft's layout (commit, old_file, new_file, old_contents, new_contents, subject,
  message, lang, license, repos): the instruction is `subject` (else the first line of `message`).
- `editpackft`: nuprl/EditPackFT's (the same fields, plus `instruction`, `ndiff`, `content`): `instruction` first.
- `fields`: any layout, by the mapping in the config (`FieldMap`).
Tags carry the provenance the contract has no field for: `dataset:`, `path:` (the edited file, whose extension
confirms the language), `license:` (a record's own, CommitPackFT's per-repository licence), `commit:`, `repo:`.
A line that is not JSON, or a record without a required field, is a `CorruptRecord` naming the file and line.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipelines.datasets.settings import DatasetSpec, FieldMap
from trajforge.errors import LakeCorruption

READABLE = (".jsonl", ".jsonl.gz", ".json", ".parquet")


class CorruptRecord(LakeCorruption):
    """A record the adapter cannot read; the message names the file and the line (or row)."""


def _format(path: Path, declared: str) -> str:
    if declared != "auto":
        return declared
    name = path.name.lower()
    for suffix, kind in ((".jsonl.gz", "jsonl"), (".jsonl", "jsonl"), (".ndjson", "jsonl"), (".json", "json"), (".parquet", "parquet")):
        if name.endswith(suffix):
            return kind
    raise CorruptRecord(f"{path}: cannot tell its format from the name; set file_format (jsonl, json, parquet) for this dataset")


def read_records(path: Path, declared: str = "auto") -> Iterator[tuple[str, dict[str, Any]]]:
    """(location, record) of every record under `path`: `file:line` for JSON lines, `file:row N` otherwise."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and (declared != "auto" or p.name.lower().endswith(READABLE)))
        if not files:
            raise CorruptRecord(f"{path}: no readable data file ({', '.join(READABLE)}) in the folder")
        for file in files:
            yield from read_records(file, declared)
        return
    kind = _format(path, declared)
    if kind == "jsonl":
        opener = gzip.open if path.name.lower().endswith(".gz") else open
        try:
            with opener(path, "rt", encoding="utf-8") as handle:
                for number, line in enumerate(handle, 1):
                    if line.strip():
                        yield f"{path}:{number}", _object(line, f"{path}:{number}")
        except (UnicodeDecodeError, OSError, EOFError) as exc:
            raise CorruptRecord(f"{path}: unreadable ({exc}); fetch it again") from None
    elif kind == "json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise CorruptRecord(f"{path}: not valid JSON ({exc}); fetch it again") from None
        rows = data.get("data") if isinstance(data, dict) else data
        if not isinstance(rows, list):
            raise CorruptRecord(f"{path}: expected a JSON array of records (or {{\"data\": [...]}})")
        for index, row in enumerate(rows):
            yield f"{path}:row {index + 1}", _checked(row, f"{path}:row {index + 1}")
    else:
        yield from _parquet(path)


def _parquet(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        reader = pq.ParquetFile(path)
        row = 0
        for batch in reader.iter_batches(batch_size=1024):
            for record in batch.to_pylist():
                row += 1
                yield f"{path}:row {row}", record
    except (pa.ArrowInvalid, OSError) as exc:
        raise CorruptRecord(f"{path}: not a readable Parquet file ({exc}); fetch it again") from None


def _object(line: str, where: str) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except ValueError as exc:
        raise CorruptRecord(f"{where}: not a JSON record ({exc.args[0] if exc.args else exc}); the file is damaged: fetch it again") from None
    return _checked(value, where)


def _checked(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise CorruptRecord(f"{where}: a record must be a JSON object, got {type(value).__name__}")
    return value


def _get(record: dict[str, Any], names: str | list[str] | None) -> Any:
    """The first present, non-empty value of `names` (dotted for nested objects); None when none is."""
    for name in [names] if isinstance(names, str) else names or []:
        value: Any = record
        for part in name.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value not in (None, ""):
            return value
    return None


def _text(record: dict[str, Any], names: str | list[str], field: str, where: str, required_nonempty: bool = False) -> str:
    """A string field; `pre`/`post` may be empty (a new or deleted file) but must be there."""
    listed = [names] if isinstance(names, str) else names
    value = _get(record, listed)
    if value is None and not required_nonempty and any(_present(record, name) for name in listed):
        return ""
    if value is None:
        raise CorruptRecord(f"{where}: no {field} (looked for {', '.join(listed)}); the record does not have this adapter's layout")
    if not isinstance(value, str):
        raise CorruptRecord(f"{where}: {field} ({', '.join(listed)}) must be a string, got {type(value).__name__}")
    return value


def _present(record: dict[str, Any], name: str) -> bool:
    value: Any = record
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return False
        value = value[part]
    return value is not None


def canonical_language(name: str | None) -> str:
    from sandbox.languages import ALIASES

    key = str(name or "").strip().lower()
    return ALIASES.get(key, key)


COMMIT_FIELDS = FieldMap(instruction=["subject"], pre="old_contents", post="new_contents", language="lang",
                         path=["new_file", "old_file"], tags=["license", "commit", "repos"])
EDITPACK_FIELDS = COMMIT_FIELDS.model_copy(update={"instruction": ["instruction", "subject"]})
TAG_NAMES = {"repos": "repo"}


def normalize(name: str, spec: DatasetSpec, record: dict[str, Any], where: str) -> dict[str, Any]:
    """One record in the common form; a CorruptRecord naming `where` when it lacks what the adapter needs."""
    mapping = {"commitpackft": COMMIT_FIELDS, "editpackft": EDITPACK_FIELDS}.get(spec.adapter) or spec.fields
    assert mapping is not None  # the settings refuse `fields` without a mapping
    instruction = _get(record, mapping.instruction)
    if instruction is None and spec.adapter != "fields":
        instruction = (_get(record, "message") or "").strip().split("\n")[0] or None
    if not isinstance(instruction, str) or not instruction.strip():
        raise CorruptRecord(f"{where}: no instruction (looked for {mapping.instruction}); the record does not have this adapter's layout")
    pre = _text(record, mapping.pre, "pre", where)
    post = _text(record, mapping.post, "post", where)
    language = canonical_language(_get(record, mapping.language) if mapping.language else spec.language)
    path = _get(record, mapping.path)
    tags = [f"dataset:{name}"]
    if isinstance(path, str) and path:
        tags.append(f"path:{path}")
    for field in mapping.tags:
        value = _get(record, field)
        if value not in (None, ""):
            tags.append(f"{TAG_NAMES.get(field, field.rsplit('.', 1)[-1])}:{str(value).split(',')[0] if field == 'repos' else value}")
    return {"instruction": instruction.strip(), "pre": pre, "post": post, "language": language, "tags": tags}
