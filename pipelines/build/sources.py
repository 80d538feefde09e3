"""What the raw lake holds, session by session: an index of where every session's records are.

Two sources feed a build:
- `ingest`: envelope frames in `lake/raw/envelopes/**/*.seg`, grouped by the frame header's
  `session_id`. A session is ready once it has a SESSION_CLOSE, or has been silent for
  `open_session_grace_s` (an agent that never closed).
- `teacher` / `actor`: step records in `lake/raw/trajectories/*.jsonl` (the actor loop's and the
  teacher job's), grouped by task and run. A run is ready once its `final` step is recorded, or it
  has been silent for the grace period (a stopped job's unfinished run).

Indexing reads only headers and record keys; the bodies are read again, by offset, in the Ray Data
stage that builds each batch, so no shuffle is needed. Damaged bytes that valid frames follow, frames
without the header fields, unparseable record lines (and those holding a lone UTF-16 surrogate), and the torn tail of a segment or trajectory file
no writer holds (a crashed write, or a segment that is damaged throughout) are quarantine entries:
counted and listed in the manifest with their file, offset and length (the raw lake is never
rewritten), never a reason to stop. A torn tail whose writer still holds the file's lock is a write in
progress, only counted.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from trajforge.contracts.events import lone_surrogate_field
from trajforge.raw_segments import salvage, scan, scan_clean
from trajforge.errors import LakeCorruption

HEADER_FIELDS = ("session_id", "kind", "envelope_id")
# The header fields an index reads, for the one-call parse of an undamaged segment's headers; a header
# whose fields have other types (a numeric received_at, say) takes the careful per-frame path.
_HEADER_PARSE = pajson.ParseOptions(explicit_schema=pa.schema([(name, pa.string()) for name in (*HEADER_FIELDS, "received_at", "contributor_id")]),
                                    unexpected_field_behavior="ignore")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")  # UTF-8 holds no surrogate: only such an escape can bring one
_HEADER_READ = pajson.ReadOptions(use_threads=False, block_size=16 << 20)


@dataclass
class Quarantined:
    source: str
    path: str  # relative to the lake root
    offset: int
    length: int
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "path": self.path, "offset": self.offset, "length": self.length, "reason": self.reason}


RECORD_SCHEMA = pa.schema([("session_id", pa.string()), ("raw_id", pa.string()), ("offset", pa.int64()), ("length", pa.int64()),
                           ("kind", pa.string()), ("seen", pa.float64()), ("contributor_id", pa.string())])


def records_table(rows: list[tuple[str, str, int, int, str, float, str | None]]) -> pa.Table:
    """RECORD_SCHEMA rows from tuples in its column order."""
    columns = list(zip(*rows)) if rows else [[] for _ in RECORD_SCHEMA]
    return pa.table([pa.array(column, field.type) for column, field in zip(columns, RECORD_SCHEMA)], schema=RECORD_SCHEMA)


@dataclass
class FileIndex:
    """One raw file's records, a RECORD_SCHEMA row each in file order (session key, raw id, offset, length,
    kind, time seen, contributor), plus what was quarantined."""

    path: str
    records: pa.Table = field(default_factory=RECORD_SCHEMA.empty_table)
    quarantined: list[Quarantined] = field(default_factory=list)
    torn_tail_bytes: int = 0


def _timestamp(value: Any) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def _timestamps(values: pa.ChunkedArray) -> pa.ChunkedArray | pa.Array:
    """`_timestamp` of every value, in one Arrow cast when all are ISO 8601 times with a zone (as the ingest service writes them)."""
    try:
        micros = pc.cast(values, pa.timestamp("us", tz="UTC")).cast(pa.int64())
    except pa.ArrowInvalid:  # a value that is not an ISO 8601 time with a zone: parse each as the careful path does
        return pa.array([_timestamp(value) for value in values.to_pylist()], pa.float64())
    return pc.divide(pc.fill_null(micros, 0).cast(pa.float64()), 1e6)


def indexed_frames(lake_root: str, relative: str) -> tuple[FileIndex, list[bytes | memoryview]]:
    """The segment's index and the body of each frame it lists, in file order (a view of the mapped
    file when the segment is undamaged)."""
    path = Path(lake_root) / relative
    spans = scan_clean(path)
    if spans is not None:
        found = _index_clean(relative, spans)
        if found is not None:
            return found
    quarantined: list[Quarantined] = []
    try:
        frames, valid_end = scan(path)
        torn_tail_bytes = path.stat().st_size - valid_end
    except LakeCorruption:
        frames, damaged, torn_tail_bytes = salvage(path)
        quarantined += [Quarantined("ingest", relative, offset, length, "damaged bytes between valid frames") for offset, length in damaged]
    if torn_tail_bytes and not writer_holds(path):
        quarantined.append(Quarantined("ingest", relative, path.stat().st_size - torn_tail_bytes, torn_tail_bytes,
                                       "torn tail: bytes after the last whole frame, and no writer holds the segment"))
    rows, bodies = [], []
    for frame in frames:
        header = frame.header
        if not isinstance(header, dict) or any(not isinstance(header.get(name), str) for name in HEADER_FIELDS):
            quarantined.append(Quarantined("ingest", relative, frame.offset, frame.length, f"frame header lacks one of {list(HEADER_FIELDS)}"))
            continue
        contributor = header.get("contributor_id")
        rows.append((header["session_id"], header["envelope_id"], frame.offset, frame.length, header["kind"], _timestamp(header.get("received_at")),
                     contributor if isinstance(contributor, str) else None))
        bodies.append(frame.body)
    return FileIndex(relative, records_table(rows), quarantined, torn_tail_bytes), bodies


def writer_holds(path: Path) -> bool:
    """Whether a live writer holds the file's lock (its torn tail is then a write in progress).

    A shared lock is taken and given back at once; a writer only ever opens a new file, so none waits on it.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:  # a filesystem without flock: take the tail for a write in progress, as a reader must
        return True
    finally:
        os.close(fd)
    return False


def _index_clean(relative: str, spans: list[tuple[int, int, memoryview, memoryview]]) -> tuple[FileIndex, list[memoryview]] | None:
    """The index of an undamaged segment, its headers parsed in one Arrow call; None when one needs the careful path."""
    try:
        headers = pajson.read_json(io.BytesIO(b"\n".join(header for _, _, header, _ in spans)), read_options=_HEADER_READ, parse_options=_HEADER_PARSE)
    except pa.ArrowInvalid:
        return None
    if headers.num_rows != len(spans) or any(headers.column(name).null_count for name in HEADER_FIELDS):
        return None
    positions = np.array([(offset, length) for offset, length, _, _ in spans], dtype=np.int64).reshape(-1, 2)
    records = pa.table([headers.column("session_id"), headers.column("envelope_id"), positions[:, 0], positions[:, 1], headers.column("kind"),
                        _timestamps(headers.column("received_at")), headers.column("contributor_id")], schema=RECORD_SCHEMA)
    return FileIndex(relative, records), [body for _, _, _, body in spans]


def loop_source(record: dict[str, Any]) -> str:
    return "teacher" if record.get("teacher") else "actor"


def loop_session_id(record: dict[str, Any]) -> str:
    return f"{loop_source(record)}:{record['task_id']}:{record.get('run_id') or 'run'}"


def index_trajectory_file(lake_root: str, relative: str) -> FileIndex:
    """Record keys of one trajectory file. A last line without its newline is a write in progress while its
    writer holds the file's lock, and a quarantine entry (a crash's torn line) when none does."""
    path = Path(lake_root) / relative
    index = FileIndex(relative)
    rows = []
    offset = 0
    with path.open("rb") as handle:
        for line in handle:
            length = len(line)
            if not line.endswith(b"\n"):
                index.torn_tail_bytes = length
                if not writer_holds(path):
                    index.quarantined.append(Quarantined("trajectories", relative, offset, length,
                                                         "torn tail: a last line without its newline, and no writer holds the file"))
                break
            try:
                record = json.loads(line)
                session = loop_session_id(record)
                kind = "final" if record.get("final") else "step"
                lone = lone_surrogate_field(record) if _SURROGATE_ESCAPE.search(line) else None
                if lone is not None:  # JSON can escape one; no Parquet (UTF-8) string nor tokenizer takes it
                    index.quarantined.append(Quarantined("trajectories", relative, offset, length, f"a lone UTF-16 surrogate in {lone}, which is not text"))
                else:
                    rows.append((session, f"{relative}:{offset}", offset, length, kind, float(record.get("created_at") or 0.0), None))
            except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
                reason = ("not JSON" if isinstance(exc, ValueError) else "nested too deeply to parse" if isinstance(exc, RecursionError)
                          else f"record lacks task_id or is not an object ({type(exc).__name__})")
                index.quarantined.append(Quarantined("trajectories", relative, offset, length, reason))
            offset += length
    index.records = records_table(rows)
    return index


def raw_files(lake_root: Path) -> dict[str, str]:
    """Every raw file a build reads, relative path -> source (`ingest` or `trajectories`)."""
    found = {}
    for path in sorted((lake_root / "raw" / "envelopes").rglob("*.seg")):
        if not path.is_dir():  # a folder that happens to end in .seg holds no frames
            found[str(path.relative_to(lake_root))] = "ingest"
    for path in sorted((lake_root / "raw" / "trajectories").glob("*.jsonl")):
        if not path.is_dir():
            found[str(path.relative_to(lake_root))] = "trajectories"
    return found


def read_bytes(lake_root: str, relative: str, offset: int, length: int) -> bytes:
    with open(Path(lake_root) / relative, "rb") as handle:
        handle.seek(offset)
        return handle.read(length)
