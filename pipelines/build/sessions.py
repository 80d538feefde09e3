"""The raw lake's sessions: every file's records grouped by session key, as columns.

`group_sessions` concatenates the files' indexes (in path order) and groups their records with Arrow
and numpy, so the hundreds of thousands of records of a large lake never become Python objects just
to be counted. `LakeSessions.select` turns the sessions a build will read into `SessionRefs`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.build.sources import RECORD_SCHEMA, FileIndex

CLOSING_KINDS = pa.array(["SESSION_CLOSE", "final"])  # an ingest session's close, a loop run's last step


@dataclass
class SessionRefs:
    """Where one session's records are: `(file, raw id, offset, length)`, in file and offset order."""

    session_id: str
    source: str
    refs: list[tuple[str, str, int, int]] = field(default_factory=list)
    closed: bool = False
    last_seen: float = 0.0
    contributor_id: str | None = None

    @property
    def fingerprint(self) -> str:
        """Changes whenever a record is added to (or removed from) the session."""
        return hashlib.sha256("\n".join(sorted(raw_id for _, raw_id, _, _ in self.refs)).encode()).hexdigest()[:32]


@dataclass
class LakeSessions:
    """One entry per session key, in order of first appearance; session `i`'s records are rows
    `starts[i]:starts[i + 1]` of `records` (every file's, in path then file order, `file` naming `paths`)."""

    ids: list[str]
    sources: list[str]
    closed: np.ndarray
    last_seen: np.ndarray
    contributors: list[str | None]
    starts: np.ndarray
    records: pa.Table
    paths: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    def select(self, mask: np.ndarray | None = None) -> dict[str, SessionRefs]:
        """Session key -> its `SessionRefs`, for the sessions `mask` picks (all without one)."""
        chosen = np.arange(len(self.ids)) if mask is None else np.flatnonzero(mask)
        counts = self.starts[chosen + 1] - self.starts[chosen]
        rows = np.repeat(self.starts[chosen] - np.cumsum(counts) + counts, counts) + np.arange(int(counts.sum()))
        picked = self.records.take(pa.array(rows, pa.int64()))
        files, raw_ids, offsets, lengths = (picked.column(name).to_pylist() for name in ("file", "raw_id", "offset", "length"))
        refs = list(zip([self.paths[number] for number in files], raw_ids, offsets, lengths))
        found, position = {}, 0
        for session, count in zip(chosen.tolist(), counts.tolist()):
            key = self.ids[session]
            found[key] = SessionRefs(key, self.sources[session], refs[position : position + count], bool(self.closed[session]),
                                     float(self.last_seen[session]), self.contributors[session])
            position += count
        return found


def group_sessions(indexes: list[FileIndex], source_of: dict[str, str]) -> LakeSessions:
    """Every session of the files' indexes (`source_of`: file -> source name; a `trajectories` file's
    sessions are named after their key's prefix, `teacher` or `actor`)."""
    indexes = sorted(indexes, key=lambda item: item.path)
    paths = [index.path for index in indexes]
    tables = [index.records.append_column("file", pa.array(np.full(index.records.num_rows, number, dtype=np.int32)))
              for number, index in enumerate(indexes)]
    records = pa.concat_tables(tables) if tables else RECORD_SCHEMA.append(pa.field("file", pa.int32())).empty_table()
    encoded = pc.dictionary_encode(records.column("session_id")).combine_chunks() if records.num_rows else None
    if encoded is None:
        return LakeSessions([], [], np.zeros(0, bool), np.zeros(0), [], np.zeros(1, np.int64), records, paths)
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    ids = encoded.dictionary.to_pylist()
    order = np.argsort(codes, kind="stable")  # by session, keeping path then file order within one
    records = records.take(pa.array(order))
    starts = np.concatenate([[0], np.cumsum(np.bincount(codes, minlength=len(ids)))])
    heads = starts[:-1]

    closing = pc.fill_null(pc.is_in(records.column("kind"), CLOSING_KINDS), False).to_numpy(zero_copy_only=False)
    closed = np.logical_or.reduceat(closing, heads)
    last_seen = np.maximum(np.maximum.reduceat(records.column("seen").to_numpy(), heads), 0.0)
    named = pc.fill_null(pc.greater(pc.binary_length(records.column("contributor_id")), 0), False).to_numpy(zero_copy_only=False)
    named_rows = np.flatnonzero(named)
    sessions_named, first = np.unique(np.searchsorted(starts, named_rows, side="right") - 1, return_index=True)
    contributors: list[str | None] = [None] * len(ids)
    for session, value in zip(sessions_named.tolist(), records.column("contributor_id").take(pa.array(named_rows[first])).to_pylist()):
        contributors[session] = value
    first_files = records.column("file").take(pa.array(heads)).to_pylist()
    sources = [key.split(":", 1)[0] if source_of[paths[number]] == "trajectories" else source_of[paths[number]]
               for key, number in zip(ids, first_files)]
    return LakeSessions(ids, sources, closed, last_seen, contributors, starts, records, paths)
