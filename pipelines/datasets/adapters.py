"""Turning a dataset's records into the common form of seed 002 section 3.2:

    {"instruction": str, "pre": str, "post": str, "language": str, "tags": [str]}

`readers.py` reads the files (JSON lines, JSON, Parquet, CSV; a folder file by file). Adapters:
- `commitpackft`: bigcode/commitpackft's layout (commit, old_file, new_file, old_contents, new_contents, subject,
  message, lang, license, repos): the instruction is `subject` (else the first line of `message`).
- `editpackft`: nuprl/EditPackFT's (the same fields, plus `instruction`, `ndiff`, `content`): `instruction` first.
- `opencodeedit`, `agentpack`, `marv`, `smellycode`: those datasets' own layouts (`layouts.py`).
- `fields`: any one-record-per-edit layout, by the mapping in the config (`FieldMap`).
Tags carry the provenance the contract has no field for: `dataset:`, `path:` (the edited file, whose extension
confirms the language), `license:` (a record's own, CommitPackFT's per-repository licence), `commit:`, `repo:`.
A record without what its adapter needs is a `CorruptRecord` naming the file and line (the layout is wrong: ingestion
stops); a well-formed one the adapter cannot turn into pre/post raises `Unconvertible`, which ingestion counts.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipelines.datasets.readers import READABLE, CorruptRecord, Unconvertible, read_records
from pipelines.datasets.settings import DatasetSpec, FieldMap

__all__ = ["READABLE", "CorruptRecord", "Unconvertible", "normalize", "read_records", "source_records"]


def source_records(spec: DatasetSpec, path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """The records of a fetched source as its adapter reads them."""
    if spec.adapter == "smellycode":
        from pipelines.datasets.layouts import smellycode_records

        return smellycode_records(path)
    return read_records(path, spec.file_format, keyed=spec.adapter == "marv")


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
    from pipelines.datasets.layouts import CONVERTERS

    if spec.adapter in CONVERTERS:
        return CONVERTERS[spec.adapter](name, canonical_language(spec.language), record, where)
    mapping = {"commitpackft": COMMIT_FIELDS, "editpackft": EDITPACK_FIELDS}.get(spec.adapter) or spec.fields
    assert mapping is not None  # the settings refuse `fields` without a mapping
    instruction = _get(record, mapping.instruction)
    if instruction is None and spec.adapter != "fields":
        instruction = (_get(record, "message") or "").strip().split("\n")[0] or None
    if not isinstance(instruction, str) or not instruction.strip():
        raise CorruptRecord(f"{where}: no instruction (looked for {mapping.instruction}); the record does not have this adapter's layout")
    pre = _text(record, mapping.pre, "pre", where)
    post = _text(record, mapping.post, "post", where)
    language = _get(record, mapping.language) if mapping.language else spec.language
    if not isinstance(language, (str, type(None))):
        raise CorruptRecord(f"{where}: language ({mapping.language}) must be a string, got {type(language).__name__}")
    language = canonical_language(language)
    path = _get(record, mapping.path)
    tags = [f"dataset:{name}"]
    if isinstance(path, str) and path:
        tags.append(f"path:{path}")
    for field in mapping.tags:
        value = _get(record, field)
        if value not in (None, ""):
            tags.append(f"{TAG_NAMES.get(field, field.rsplit('.', 1)[-1])}:{str(value).split(',')[0] if field == 'repos' else value}")
    return {"instruction": instruction.strip(), "pre": pre, "post": post, "language": language, "tags": tags}
