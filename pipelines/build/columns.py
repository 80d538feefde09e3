"""The build's columnar stitch and score: envelope segments as Arrow tables, every session scored at once.

`read_segment` reads one segment once: it indexes the frames (`sources.indexed_frames`) and
parses every envelope body with Arrow's JSON reader into two tables, one row per envelope (session,
body type, chunk_sequence, model, complexity) and one per step (step number, type, token count).
`stitch_and_score` concatenates the segments' tables in file order, stitches every session with
`trajforge.stitch.stitch_order` and scores them with `trajforge.scoring.score_columns`: the ordering
and the formula the ingest ledger runs for one session, with no Python loop over sessions or steps.

An envelope whose body is not a JSON object is left out here and quarantined by the per-session stage,
as before. One whose fields have the wrong types for the scorer (a step number that is not an integer,
say) makes its session unscorable: the session is quarantined with that reason, never scored wrong.
"""

from __future__ import annotations

import io
import json
import zlib
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from pipelines.build.sources import FileIndex, indexed_frames
from trajforge.contracts.events import lone_surrogate_field
from trajforge.scoring import Score, kind_codes, score_columns, score_of
from trajforge.stitch import stitch_order

STEP_TYPE = pa.struct([("step", pa.int64()), ("type", pa.string()), ("token_count", pa.int64())])
BODY_SCHEMA = pa.schema([
    ("type", pa.string()),
    ("chunk_sequence", pa.int64()),
    ("metadata", pa.struct([("model_engine", pa.string()), ("task_complexity", pa.string())])),
    ("trajectory_log", pa.list_(STEP_TYPE)),
])
_PARSE = pajson.ParseOptions(explicit_schema=BODY_SCHEMA, unexpected_field_behavior="ignore")
_READ = pajson.ReadOptions(use_threads=False, block_size=64 << 20)  # a whole segment in one block: one chunk, no copy to combine
NOT_CHUNKS = pa.array(["SESSION_CLOSE", "USER_FEEDBACK"])
ENVELOPE_SCHEMA = pa.schema([("session_id", pa.string()), ("body_type", pa.string()), ("chunk_sequence", pa.int64()),
                             ("model_engine", pa.string()), ("task_complexity", pa.string())])
STEP_SCHEMA = pa.schema([("envelope", pa.int64()), ("position", pa.int64()), ("step", pa.int64()), ("type", pa.string()),
                         ("token_count", pa.int64())])


@dataclass
class SegmentColumns:
    """One segment's envelopes (file order) and their steps (`envelope`: row in `envelopes`)."""

    envelopes: pa.Table
    steps: pa.Table
    unscorable: dict[str, str] = field(default_factory=dict)  # session id -> why it cannot be scored


def _one_line(body: bytes | memoryview) -> bytes:
    # A raw line break can only be whitespace between JSON tokens (never inside a string), so this keeps the value.
    body = bytes(body)
    return body.replace(b"\n", b" ").replace(b"\r", b" ") if b"\n" in body or b"\r" in body else body


def _one_per_line(blob: bytes, count: int) -> bool:
    """Whether `blob` (`count` bodies joined by line breaks) has no other line break. Found by memchr
    (`find`): `bytes.count` reads a byte at a time, about eight times slower on a 40 MB segment."""
    if b"\r" in blob:
        return False
    found, position, find = 0, blob.find(b"\n"), blob.find
    while position >= 0 and found < count:
        found, position = found + 1, find(b"\n", position + 1)
    return found == count - 1


def _parse_bodies(bodies: list[bytes | memoryview], names: pa.ChunkedArray) -> tuple[pa.Table, list[int], dict[int, str]]:
    """The bodies as BODY_SCHEMA rows: the table, which bodies it holds, and why others could not be read."""
    if bodies:
        blob = b"\n".join(bodies)
        if not _one_per_line(blob, len(bodies)):  # a body spans lines: fold it onto one
            blob = b"\n".join(map(_one_line, bodies))
        try:
            table = pajson.read_json(io.BytesIO(blob), read_options=_READ, parse_options=_PARSE)
            if table.num_rows == len(bodies):
                return table, list(range(len(bodies))), {}
        except pa.ArrowInvalid:
            pass
    tables, kept, wrong = [], [], {}
    for number, body in enumerate(bodies):  # the slow path, only for a segment holding a bad body
        try:
            envelope = json.loads(bytes(body))
            if not isinstance(envelope, dict):
                continue
            if (field := lone_surrogate_field(envelope)) is not None:  # JSON can escape one; no UTF-8 string holds it
                wrong[number] = f"envelope {names[number].as_py()} holds a lone UTF-16 surrogate in {field}, which is not text"
                continue
            tables.append(pajson.read_json(io.BytesIO(_one_line(body)), read_options=_READ, parse_options=_PARSE))
            kept.append(number)
        except ValueError as exc:  # not JSON (the per-session stage quarantines it), or wrong types (ArrowInvalid)
            if isinstance(exc, pa.ArrowInvalid):
                wrong[number] = f"envelope {names[number].as_py()} has fields of the wrong type for the scorer: {str(exc)[:200]}"
    return (pa.concat_tables(tables) if tables else BODY_SCHEMA.empty_table()), kept, wrong


def read_segment(lake_root: str, relative: str) -> tuple[FileIndex, SegmentColumns]:
    """Index one segment and parse its envelope bodies into columns, reading the file once."""
    index, bodies = indexed_frames(lake_root, relative)
    sessions = index.records.column("session_id")
    table, kept, wrong = _parse_bodies(bodies, index.records.column("raw_id"))
    unscorable = {sessions[number].as_py(): reason for number, reason in wrong.items()}
    metadata = table.column("metadata")
    envelopes = pa.table([sessions if len(kept) == len(sessions) else sessions.take(pa.array(kept, pa.int64())), table.column("type"),
                          pc.fill_null(table.column("chunk_sequence"), 0), pc.struct_field(metadata, "model_engine"),
                          pc.struct_field(metadata, "task_complexity")], schema=ENVELOPE_SCHEMA)
    logs = table.column("trajectory_log").combine_chunks()
    owners = pc.list_parent_indices(logs).to_numpy(zero_copy_only=False).astype(np.int64)
    flat = pc.list_flatten(logs)
    starts = np.concatenate([[0], np.cumsum(pc.fill_null(pc.list_value_length(logs), 0).to_numpy(zero_copy_only=False))])
    numbers = pc.struct_field(flat, "step")
    steps = pa.table([owners, np.arange(len(flat), dtype=np.int64) - starts[owners], numbers, pc.struct_field(flat, "type"),
                      pc.fill_null(pc.struct_field(flat, "token_count"), 0)], schema=STEP_SCHEMA)
    if numbers.null_count:
        for owner in np.unique(owners[np.flatnonzero(pc.is_null(numbers).to_numpy(zero_copy_only=False))]):
            unscorable[envelopes.column("session_id")[int(owner)].as_py()] = "a step has no integer step number"
    return index, SegmentColumns(envelopes, steps, unscorable)


def partition_of(session_id: str, partitions: int) -> int:
    """The scoring task a session goes to: every segment sends one session's envelopes to the same one."""
    return zlib.crc32(session_id.encode()) % partitions


def split(columns: SegmentColumns, partitions: int) -> list[SegmentColumns]:
    """`columns` cut into `partitions` parts by `partition_of` their session, each in file order."""
    if partitions == 1:
        return [columns]
    encoded = pc.dictionary_encode(columns.envelopes.column("session_id")).combine_chunks()
    of_key = np.array([partition_of(key, partitions) for key in encoded.dictionary.to_pylist()], dtype=np.int64)
    part = of_key[encoded.indices.to_numpy(zero_copy_only=False)]
    owners = columns.steps.column("envelope").to_numpy()
    renumbered = np.zeros(len(part), dtype=np.int64)
    parts = []
    for number in range(partitions):
        rows = np.flatnonzero(part == number)
        renumbered[rows] = np.arange(len(rows))
        steps = columns.steps.filter(pa.array(part[owners] == number))
        steps = steps.set_column(0, "envelope", pa.array(renumbered[steps.column("envelope").to_numpy()], pa.int64()))
        unscorable = {key: reason for key, reason in columns.unscorable.items() if partition_of(key, partitions) == number}
        parts.append(SegmentColumns(columns.envelopes.take(pa.array(rows, pa.int64())), steps, unscorable))
    return parts


@dataclass
class ScoredSessions:
    """`score_columns`' result for `session_ids`, and the sessions that could not be scored, with why."""

    session_ids: list[str]
    models: list[str | None]
    columns: dict[str, np.ndarray]
    total_tokens: np.ndarray
    unscorable: dict[str, str]

    @classmethod
    def merge(cls, parts: list[ScoredSessions]) -> ScoredSessions:
        """One result from the scoring tasks' results over disjoint sets of sessions."""
        return cls([key for part in parts for key in part.session_ids], [model for part in parts for model in part.models],
                   {name: np.concatenate([part.columns[name] for part in parts]) for name in parts[0].columns},
                   np.concatenate([part.total_tokens for part in parts]), {key: why for part in parts for key, why in part.unscorable.items()})

    def score(self, index: int) -> Score:
        return score_of(self.columns, index, self.models[index])

    def table(self) -> pa.Table:
        """One row per scored session, sorted by session id: steps, tokens, points and the breakdown."""
        order = np.argsort(np.array(self.session_ids, dtype=object), kind="stable")
        columns = {"session_id": pa.array(self.session_ids, pa.string()).take(order), "model_engine": pa.array(self.models, pa.string()).take(order),
                   "total_steps": self.columns["steps"][order], "total_tokens": self.total_tokens[order],
                   "score": self.columns["total_points"][order]}
        columns.update({name: values[order] for name, values in self.columns.items() if name not in ("steps", "total_points")})
        return pa.table(columns)


def _first_per_group(groups: np.ndarray, *keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first row of each group present (ordered by `keys`, most significant first): (rows, their groups)."""
    order = np.lexsort((*reversed(keys), groups))
    sorted_groups = groups[order]
    starts = np.ones(len(order), dtype=bool)
    starts[1:] = sorted_groups[1:] != sorted_groups[:-1]
    return order[starts], sorted_groups[starts]


def _pick(values: pa.Array, rows: np.ndarray, sessions: int) -> list:
    """`values[rows[s]]` per session, None where `rows[s]` is -1."""
    found = rows >= 0
    picked = [None] * sessions
    for session, value in zip(np.flatnonzero(found), values.take(pa.array(rows[found])).to_pylist()):
        picked[session] = value
    return picked


def stitch_and_score(parts: list[tuple[str, SegmentColumns]]) -> ScoredSessions:
    """Stitch and score every session of the segments' columns (`(relative path, columns)`)."""
    parts = sorted(parts, key=lambda part: part[0])
    unscorable = {session: reason for _, part in parts for session, reason in part.unscorable.items()}
    bases = np.cumsum([0] + [part.envelopes.num_rows for _, part in parts])
    envelopes = pa.concat_tables([part.envelopes for _, part in parts]) if parts else ENVELOPE_SCHEMA.empty_table()
    steps = pa.concat_tables([part.steps.set_column(0, "envelope", pc.add(part.steps.column("envelope"), int(base)))
                              for (_, part), base in zip(parts, bases)]) if parts else STEP_SCHEMA.empty_table()

    keep = pc.invert(pc.is_in(envelopes.column("session_id"), pa.array(sorted(unscorable), pa.string())))
    arrival = np.flatnonzero(keep.to_numpy(zero_copy_only=False))  # rows of the envelopes we score, in file order
    envelopes = envelopes.take(pa.array(arrival))
    encoded = pc.dictionary_encode(envelopes.column("session_id")).combine_chunks()
    groups = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    session_ids = encoded.dictionary.to_pylist()
    sessions = len(session_ids)
    body_type = envelopes.column("body_type")
    chunk = pc.invert(pc.fill_null(pc.is_in(body_type, NOT_CHUNKS), False)).to_numpy(zero_copy_only=False)
    close = pc.fill_null(pc.equal(body_type, "SESSION_CLOSE"), False).to_numpy(zero_copy_only=False)
    sequence = envelopes.column("chunk_sequence").to_numpy()

    # Steps of the chunks we score, mapped to their envelope's new row.
    row_of = np.full(int(bases[-1]), -1, dtype=np.int64)
    row_of[arrival] = np.arange(len(arrival))
    owner = row_of[steps.column("envelope").to_numpy()]
    mine = owner >= 0
    mine[mine] = chunk[owner[mine]]
    steps, owner = steps.filter(pa.array(mine)), owner[mine]
    kept, _ = stitch_order(groups[owner], sequence[owner], owner, steps.column("position").to_numpy(), steps.column("step").to_numpy())  # all, in order
    kept_groups = groups[owner][kept]
    kinds = _kind_codes(steps.column("type").take(pa.array(kept)))
    tokens = np.bincount(kept_groups, weights=steps.column("token_count").to_numpy()[kept], minlength=sessions).astype(np.int64)

    # The metadata: the first chunk's (by sequence, then arrival), the last close's filling what it lacks.
    first = np.full(sessions, -1, dtype=np.int64)
    rows, owners = _first_per_group(groups[chunk], sequence[chunk], np.flatnonzero(chunk))
    first[owners] = np.flatnonzero(chunk)[rows]
    last_close = np.full(sessions, -1, dtype=np.int64)
    rows, owners = _first_per_group(groups[close], -np.flatnonzero(close))
    last_close[owners] = np.flatnonzero(close)[rows]
    metadata = {}
    for name in ("model_engine", "task_complexity"):
        column = envelopes.column(name).combine_chunks()
        metadata[name] = [a if a is not None else b for a, b in zip(_pick(column, first, sessions), _pick(column, last_close, sessions))]
    heavy = np.array([value == "heavy" for value in metadata["task_complexity"]], dtype=bool)
    columns = score_columns(kept_groups, kinds, metadata["model_engine"], heavy)
    return ScoredSessions(session_ids, metadata["model_engine"], columns, tokens, unscorable)


def _kind_codes(types: pa.ChunkedArray | pa.Array) -> np.ndarray:
    encoded = pc.dictionary_encode(pc.fill_null(types, "")).combine_chunks() if len(types) else None
    if encoded is None:
        return np.zeros(0, dtype=np.int8)
    return kind_codes(encoded.dictionary.to_pylist())[encoded.indices.to_numpy(zero_copy_only=False)]
