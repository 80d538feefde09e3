"""Reading a dataset's files into records: `(location, record)` pairs, before any adapter looks at them.

Files: JSON lines (`.jsonl`, `.jsonl.gz`, `.ndjson`), JSON (`.json`: an array of records, `{"data": [...]}`, or, with
`keyed=True`, an object whose keys group lists of records, as MaRV's `MaRV.json` does), Parquet (`.parquet`), CSV
(`.csv`, a header row). A folder is read file by file in name order (a Parquet shard folder, CommitPackFT's
`data/<language>/data.jsonl`, AgentPack's `train/*.jsonl.gz`). A location is `file:line` for JSON lines and
`file:row N` otherwise; a line that is not JSON, or a file that cannot be read, is a `CorruptRecord` naming it.

Two errors an adapter raises: `CorruptRecord`, the file is damaged or not of the adapter's layout (ingestion stops:
fetch it again or fix the config); `Unconvertible`, a well-formed record that the adapter cannot turn into pre/post (a
multi-file patch, a smell without a refactored version): it is counted by reason in `_ingest.json` and the dataset's
report, never silently dropped, and ingestion goes on.
"""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from trajforge.errors import LakeCorruption

READABLE = (".jsonl", ".jsonl.gz", ".ndjson", ".json", ".parquet", ".csv")
FORMATS = ((".jsonl.gz", "jsonl"), (".jsonl", "jsonl"), (".ndjson", "jsonl"), (".json", "json"), (".parquet", "parquet"), (".csv", "csv"))


class CorruptRecord(LakeCorruption):
    """A record the adapter cannot read; the message names the file and the line (or row)."""


class Unconvertible(ValueError):
    """A well-formed record the adapter cannot turn into pre/post; `reason` is a short name the reports count by."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def file_format(path: Path, declared: str) -> str:
    if declared != "auto":
        return declared
    name = path.name.lower()
    for suffix, kind in FORMATS:
        if name.endswith(suffix):
            return kind
    raise CorruptRecord(f"{path}: cannot tell its format from the name; set file_format (jsonl, json, parquet, csv) for this dataset")


def data_files(path: Path, declared: str = "auto", suffixes: tuple[str, ...] = READABLE) -> list[Path]:
    """The files a folder source is read from, in name order (hidden files and folders left out)."""
    files = sorted(p for p in path.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
                   and (declared != "auto" or p.name.lower().endswith(suffixes)))
    if not files:
        raise CorruptRecord(f"{path}: no readable data file ({', '.join(suffixes)}) in the folder")
    return files


def read_records(path: Path, declared: str = "auto", keyed: bool = False) -> Iterator[tuple[str, dict[str, Any]]]:
    """(location, record) of every record under `path`. With `keyed`, a JSON object of lists yields each list's records
    with the key as `group` (`MaRV.json`: refactoring type -> refactorings)."""
    if path.is_dir():
        for file in data_files(path, declared):
            yield from read_records(file, declared, keyed)
        return
    kind = file_format(path, declared)
    if kind == "jsonl":
        opener = gzip.open if path.name.lower().endswith(".gz") else open
        try:
            with opener(path, "rb") as handle:
                for number, raw in enumerate(handle, 1):
                    if raw.strip():
                        yield f"{path}:{number}", _object(_decoded(raw, f"{path}:{number}"), f"{path}:{number}")
        except CorruptRecord:
            raise
        except (OSError, EOFError) as exc:
            raise CorruptRecord(f"{path}: unreadable ({exc}); fetch it again") from None
    elif kind == "json":
        yield from _json(path, keyed)
    elif kind == "csv":
        yield from _csv(path)
    else:
        yield from _parquet(path)


def jsonl_ranges(path: Path, size: int) -> list[tuple[int, int, int]]:
    """A plain JSON-lines file cut into pieces of about `size` bytes, each starting at a line: `(start, end, number of
    its first line)`, in order, covering the file (one read of it, to number the lines)."""
    total, pieces, start, line = path.stat().st_size, [], 0, 1
    with path.open("rb") as handle:
        while start < total:
            handle.seek(min(start + size, total))
            if handle.tell() < total:
                handle.readline()  # to the end of the line the cut falls in
            end = handle.tell()
            handle.seek(start)
            lines, left = 0, end - start
            while left:
                block = handle.read(min(left, 1 << 20))
                lines, left = lines + block.count(b"\n"), left - len(block)
            pieces.append((start, end, line))
            start, line = end, line + lines
    return pieces or [(0, 0, 1)]


def read_jsonl_range(path: Path, start: int, end: int, first_line: int) -> Iterator[tuple[str, dict[str, Any]]]:
    """(location, record) of the lines of a plain JSON-lines file from byte `start` to `end`, numbered from `first_line`."""
    try:
        with path.open("rb") as handle:
            handle.seek(start)
            number, position = first_line, start
            while position < end and (raw := handle.readline()):
                position += len(raw)
                if raw.strip():
                    yield f"{path}:{number}", _object(_decoded(raw, f"{path}:{number}"), f"{path}:{number}")
                number += 1
    except CorruptRecord:
        raise
    except OSError as exc:
        raise CorruptRecord(f"{path}: unreadable ({exc}); fetch it again") from None


def _json(path: Path, keyed: bool) -> Iterator[tuple[str, dict[str, Any]]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptRecord(f"{path}: not valid JSON ({exc}); fetch it again") from None
    if keyed:
        if not isinstance(data, dict) or not all(isinstance(rows, list) for rows in data.values()):
            raise CorruptRecord(f"{path}: expected a JSON object whose values are lists of records (e.g. {{\"Extract Method\": [...]}})")
        for group, rows in data.items():
            for index, row in enumerate(rows):
                where = f"{path}:{group} row {index + 1}"
                yield where, {**_checked(row, where), "group": group}
        return
    rows = data.get("data") if isinstance(data, dict) else data
    if not isinstance(rows, list):
        raise CorruptRecord(f"{path}: expected a JSON array of records (or {{\"data\": [...]}})")
    for index, row in enumerate(rows):
        yield f"{path}:row {index + 1}", _checked(row, f"{path}:row {index + 1}")


def _csv(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            for number, row in enumerate(csv.DictReader(handle), 2):  # line 1 is the header
                yield f"{path}:{number}", dict(row)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise CorruptRecord(f"{path}: not a readable CSV file ({exc}); fetch it again") from None


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


def _decoded(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorruptRecord(f"{where}: not UTF-8 (byte {exc.start + 1} of the line); the file is damaged: fetch it again") from None


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
