"""EnvelopeStore: the durable write path of ingest (group commit), crash recovery and session lifecycle.

One commit takes every envelope that arrived while the previous one was on disk. Under one
`BEGIN IMMEDIATE` it (1) recovers segments whose writer died, (2) checks each envelope's HMAC
against the dedup index and its sequence against the session, (3) appends the accepted ones to
this process's segment and fsyncs it, (4) indexes them and advances the sessions, then commits.
So the dedup entry exists only once the data it guards is durable, and a crash between (3) and
(4) leaves frames past the segment's committed offset that recovery indexes before anything else
is accepted: an acknowledged envelope is never lost, and a retried one is answered as a duplicate.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from serve_apps.ingest import ledger, registry
from serve_apps.ingest.registry import SessionState
from serve_apps.ingest.settings import IngestSettings
from serve_apps.ingest.verify import Candidate, Verdict, rejection
from trajforge import crypto
from trajforge.errors import LakeCorruption
from trajforge.lake import Lake
from trajforge.raw_segments import Frame, SegmentWriter, cut_torn_tail, encode_frame, read_frame, scan, try_lock
from trajforge.scoring import score
from trajforge.stitch import stitch

log = logging.getLogger(__name__)
HOUR = 3600.0


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class _OpenSegment:
    segment_id: int
    date: str
    writer: SegmentWriter


class EnvelopeStore:
    """Owns one writer's segment, the registry connection it writes with, and the session secrets cache."""

    def __init__(self, settings: IngestSettings):
        self.settings = settings
        self.lake = Lake.at(settings.lake).ensure()
        key_file = Path(settings.key_file or self.lake.default_key_file)
        from_env, made = bool(os.environ.get(settings.secret_key_env)), not key_file.exists()
        self.box = crypto.SecretBox.from_env_or_file(settings.secret_key_env, key_file)
        self.writer_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._conn = registry.connect(self.lake.registry_db)
        registry.create_schema(self._conn)
        try:
            registry.check_sealing_key(self._conn, self.box, f"${settings.secret_key_env}" if from_env else f"the key file {key_file}"
                                       + (", made at this start: there was none" if made else ""), self.lake.registry_db)
        except ValueError:
            if made and not from_env:
                key_file.unlink(missing_ok=True)  # a refused start leaves no new key in the place of the one to restore
            raise
        self._lock = threading.Lock()
        # Lookups use their own connection so that they never wait behind a commit's fsync.
        self._read = registry.connect(self.lake.registry_db)
        self._read_lock = threading.Lock()
        self._segment: _OpenSegment | None = None
        self._segment_counter = 0
        self._secrets: dict[str, str] = {}
        with self._lock:
            with registry.immediate(self._conn):
                closed = self._recover()
            closed += [row["session_id"] for row in self._conn.execute(
                "SELECT session_id FROM sessions WHERE status = 'closed'"
                " AND session_id NOT IN (SELECT session_id FROM credits)"
                " AND session_id IN (SELECT session_id FROM envelopes WHERE kind = 'SESSION_CLOSE')"
            )]
        for session_id in dict.fromkeys(closed):
            self.finalize_close(session_id)

    # ---- sessions -------------------------------------------------------------------------------

    def open_session(self, request: Any, now: float | None = None) -> Verdict:
        """ECDH with the client's key; stores the session with its secrets sealed."""
        now = time.time() if now is None else now
        try:
            public_b64, private_b64 = crypto.generate_keypair()
            shared = crypto.derive_shared_secret(private_b64, request.public_key)
        except ValueError as exc:
            return rejection(400, "invalid_public_key", f"public_key: {exc}", field="public_key")
        limit = self.settings.rate_limits.sessions_per_machine_per_hour
        with self._lock, registry.immediate(self._conn) as conn:
            if conn.execute("SELECT 1 FROM sessions WHERE session_id = ?", (request.session_id,)).fetchone():
                return rejection(409, "session_exists", f"session {request.session_id!r} is already open or closed: use a new session_id")
            if limit:
                opened = registry.sessions_opened_since(conn, request.machine_fingerprint, now - HOUR)
                if len(opened) >= limit:
                    retry = max(1, int(opened[0] + HOUR - now) + 1)
                    return rejection(429, "rate_limited", f"at most {limit} sessions per machine per hour", retryAfter=retry)
            conn.execute(
                "INSERT INTO sessions (session_id, server_private_key, server_public_key, shared_secret, client_public_key,"
                " provider, model, machine_fingerprint, app_version_hash, groove_version, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    request.session_id, self.box.seal(private_b64), public_b64, self.box.seal(shared), request.public_key,
                    request.provider, request.model, request.machine_fingerprint, request.app_version_hash,
                    request.groove_version, now,
                ),
            )
        self._secrets[request.session_id] = shared
        return Verdict(200, {"server_public_key": public_b64})

    def close_session(self, session_id: str, now: float | None = None) -> Verdict:
        """The HTTP close: marks the session closed (no scoring: that needs the signed SESSION_CLOSE)."""
        now = time.time() if now is None else now
        with self._lock, registry.immediate(self._conn) as conn:
            state = registry.load_state(conn, session_id)
            if state is None:
                return rejection(404, "unknown_session", f"session {session_id!r} was never opened here")
            if state.status == "closed":
                return Verdict(200, {"closed": True, "already_closed": True})
            state.status = "closed"
            registry.save_state(conn, state, now)
        return Verdict(200, {"closed": True})

    def secret_of(self, session_id: str) -> str | None:
        """The session's shared secret (cached; secrets never change once a session exists)."""
        secret = self._secrets.get(session_id)
        if secret is None:
            with self._read_lock:
                row = self._read.execute("SELECT shared_secret FROM sessions WHERE session_id = ?", (session_id,)).fetchone()
            if row is None:
                return None
            secret = self._secrets[session_id] = self.box.open(row["shared_secret"])
        return secret

    # ---- the group commit -----------------------------------------------------------------------

    def commit(self, candidates: list[Candidate], now: float | None = None) -> list[Verdict]:
        """Sequence-check, durably append and index a group of verified envelopes, in order."""
        now = time.time() if now is None else now
        verdicts: list[Verdict | None] = [None] * len(candidates)
        closed: list[str] = []
        with self._lock:
            try:
                self._ensure_segment(now)
                with registry.immediate(self._conn) as conn:
                    closed += self._recover()
                    accepted = self._decide(conn, candidates, verdicts, now)
                    if accepted:
                        self._write(conn, candidates, accepted, verdicts, now)
            except BaseException:
                self._abandon_segment()
                raise
        for index, candidate in enumerate(candidates):
            if candidate.kind == "SESSION_CLOSE" and verdicts[index].status == 200 and not verdicts[index].body.get("duplicate"):
                closed.append(candidate.session_id)
        scores = {session_id: self.finalize_close(session_id) for session_id in dict.fromkeys(closed)}
        for index, candidate in enumerate(candidates):
            if candidate.kind == "SESSION_CLOSE" and candidate.session_id in scores and verdicts[index].status == 200:
                verdicts[index].body["score"] = scores[candidate.session_id]
        return verdicts  # type: ignore[return-value]

    def _decide(self, conn: sqlite3.Connection, candidates: list[Candidate], verdicts: list, now: float) -> list[int]:
        hmacs = list({candidate.hmac for candidate in candidates})
        known: dict[str, str] = {}
        for start in range(0, len(hmacs), 500):
            part = hmacs[start : start + 500]
            query = f"SELECT hmac, envelope_id FROM envelopes WHERE hmac IN ({','.join('?' * len(part))})"
            known.update((row["hmac"], row["envelope_id"]) for row in conn.execute(query, part))
        states: dict[str, SessionState | None] = {}
        envelope_limit = self.settings.rate_limits.envelopes_per_session
        accepted: list[int] = []
        first_in_group: dict[str, int] = {}
        for index, candidate in enumerate(candidates):
            if candidate.hmac in known or candidate.hmac in first_in_group:
                original = known.get(candidate.hmac) or first_in_group[candidate.hmac]
                verdicts[index] = Verdict(200, {"accepted": True, "duplicate": True, "envelope_id": original, "session_id": candidate.session_id})
                continue
            if candidate.session_id not in states:
                states[candidate.session_id] = registry.load_state(conn, candidate.session_id)
            state = states[candidate.session_id]
            if state is None:
                verdicts[index] = rejection(404, "unknown_session", f"session {candidate.session_id!r} was never opened here")
                continue
            # The unsigned HTTP close may overtake the signed SESSION_CLOSE: that envelope is still taken (once).
            late_close = candidate.kind == "SESSION_CLOSE" and not state.has_close_envelope
            if candidate.kind != "USER_FEEDBACK" and state.status != "active" and not late_close:
                verdicts[index] = rejection(409, "session_closed", f"session {candidate.session_id!r} is closed: only USER_FEEDBACK is accepted now")
                continue
            if envelope_limit and candidate.kind == "CHUNK" and state.envelope_count >= envelope_limit:
                # No retryAfter: the cap is for the session's life, waiting never clears it. It caps the CHUNK flow
                # (as the specification lists it): a full session can still be closed, scored and given feedback.
                verdicts[index] = rejection(429, "session_envelope_limit", f"a session may store at most {envelope_limit} envelopes; open a new session")
                continue
            body: dict[str, Any] = {"accepted": True, "duplicate": False, "session_id": candidate.session_id, "sequence": candidate.sequence}
            if candidate.kind != "USER_FEEDBACK":
                if candidate.sequence <= state.last_sequence:
                    verdicts[index] = rejection(
                        409, "stale_sequence",
                        f"sequence {candidate.sequence} is not greater than the last accepted one ({state.last_sequence})",
                        last_sequence=state.last_sequence,
                    )
                    continue
                if candidate.sequence > state.last_sequence + 1:
                    body["gap"] = {"expected": state.last_sequence + 1, "received": candidate.sequence}
                    conn.execute(
                        "INSERT INTO sequence_gaps (session_id, expected, received, recorded_at) VALUES (?, ?, ?, ?)",
                        (candidate.session_id, state.last_sequence + 1, candidate.sequence, now),
                    )
                state.last_sequence = candidate.sequence
                if candidate.kind == "SESSION_CLOSE":
                    state.status = "closed"
                    state.has_close_envelope = True
            state.envelope_count += 1
            state.step_count += candidate.steps
            state.contributor_id = state.contributor_id or candidate.contributor_id
            state.dirty = True
            first_in_group[candidate.hmac] = index
            verdicts[index] = Verdict(200, body)
            accepted.append(index)
        for state in states.values():
            if state is not None and state.dirty:
                registry.save_state(conn, state, now)
        return accepted

    def _write(self, conn: sqlite3.Connection, candidates: list[Candidate], accepted: list[int], verdicts: list, now: float) -> None:
        segment = self._segment
        received_at = _iso(now)
        frames, rows = [], []
        for index in accepted:
            candidate = candidates[index]
            envelope_id = f"env_{uuid.uuid4()}"
            header = {
                "envelope_id": envelope_id,
                "received_at": received_at,
                "session_id": candidate.session_id,
                "kind": candidate.kind,
                "sequence": candidate.sequence,
                "hmac": candidate.hmac,
                "contributor_id": candidate.contributor_id,
                "steps": candidate.steps,
                "client": candidate.client,
            }
            frames.append(encode_frame(header, candidate.body))
            rows.append([candidate.hmac, envelope_id, candidate.session_id, candidate.kind, candidate.sequence, candidate.contributor_id, candidate.steps, segment.segment_id, 0, 0, now])
            verdicts[index].body["envelope_id"] = envelope_id
        offsets = segment.writer.append(frames)
        segment.writer.sync()
        for row, offset, frame in zip(rows, offsets, frames):
            row[8], row[9] = offset, len(frame)
        conn.executemany(
            "INSERT INTO envelopes (hmac, envelope_id, session_id, kind, sequence, contributor_id, steps, segment_id, offset, length, received_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        conn.execute("UPDATE segments SET committed_offset = ? WHERE segment_id = ?", (segment.writer.size, segment.segment_id))
        for verdict in verdicts:
            original = verdict.body.get("envelope_id") if verdict.body.get("duplicate") else None
            if isinstance(original, int):
                verdict.body["envelope_id"] = verdicts[original].body["envelope_id"]

    def _ensure_segment(self, now: float) -> None:
        """Open (and register, in its own committed transaction) a new segment at a date change or past the size limit.

        The registration is durable before the first frame is written, so recovery always knows the file.
        """
        date = datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%d")
        segment = self._segment
        if segment is not None and segment.date == date and segment.writer.size < self.settings.segment_max_bytes:
            return
        self._segment_counter += 1
        path = self.lake.raw_envelopes / f"date={date}" / f"{self.writer_id}-{self._segment_counter:04d}.seg"
        writer = SegmentWriter(path)
        with registry.immediate(self._conn) as conn:
            if segment is not None:
                conn.execute("UPDATE segments SET status = 'sealed' WHERE segment_id = ?", (segment.segment_id,))
            segment_id = conn.execute(
                "INSERT INTO segments (path, writer, committed_offset, status, created_at) VALUES (?, ?, 0, 'open', ?)",
                (str(path.relative_to(self.lake.root)), self.writer_id, now),
            ).lastrowid
        if segment is not None:
            segment.writer.close()
        self._segment = _OpenSegment(segment_id, date, writer)

    def _abandon_segment(self) -> None:
        """After a failed commit, release the segment (and its lock): recovery settles what reached it."""
        if self._segment is not None:
            self._segment.writer.close()
            self._segment = None

    # ---- recovery -------------------------------------------------------------------------------

    def _recover(self) -> list[str]:
        """Index the frames that dead writers made durable but never indexed (inside the caller's transaction);
        returns the sessions they closed.

        A segment still locked has a live writer (another replica) and is left alone; the lock of a
        killed process is released by the kernel, so its segment is settled at the next commit.
        """
        conn = self._conn
        closed: list[str] = []
        current = self._segment.segment_id if self._segment is not None else -1
        rows = conn.execute(
            "SELECT segment_id, path, committed_offset FROM segments WHERE status = 'open' AND segment_id != ?", (current,)
        ).fetchall()
        for row in rows:
            path = self.lake.root / row["path"]
            if not path.exists():
                log.error("segment %s is in the registry but missing on disk; marking it lost", path)
                conn.execute("UPDATE segments SET status = 'lost' WHERE segment_id = ?", (row["segment_id"],))
                continue
            fd = try_lock(path)
            if fd is None:
                continue
            try:
                frames, valid_end = scan(path, row["committed_offset"])
                cut_torn_tail(path, valid_end, self.lake.quarantine)
                for frame in frames:
                    closed += self._index_recovered(conn, row["segment_id"], frame)
                conn.execute("UPDATE segments SET committed_offset = ?, status = 'sealed' WHERE segment_id = ?", (valid_end, row["segment_id"]))
                if frames:
                    log.warning("recovered %d envelopes from %s written by a writer that died", len(frames), path)
            except LakeCorruption as exc:
                log.error("%s", exc)
                conn.execute("UPDATE segments SET status = 'corrupt' WHERE segment_id = ?", (row["segment_id"],))
            finally:
                os.close(fd)
        return closed

    def _index_recovered(self, conn: sqlite3.Connection, segment_id: int, frame: Frame) -> list[str]:
        header = frame.header
        if conn.execute("SELECT 1 FROM envelopes WHERE hmac = ?", (header["hmac"],)).fetchone():
            log.warning("segment frame %s duplicates an indexed envelope; left unindexed", header["envelope_id"])
            return []
        received = datetime.fromisoformat(header["received_at"].replace("Z", "+00:00")).timestamp()
        conn.execute(
            "INSERT INTO envelopes (hmac, envelope_id, session_id, kind, sequence, contributor_id, steps, segment_id, offset, length, received_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (header["hmac"], header["envelope_id"], header["session_id"], header["kind"], header["sequence"],
             header.get("contributor_id"), header.get("steps", 0), segment_id, frame.offset, frame.length, received),
        )
        state = registry.load_state(conn, header["session_id"])
        if state is None:
            return []
        if header["kind"] != "USER_FEEDBACK":
            state.last_sequence = max(state.last_sequence, header["sequence"])
        if header["kind"] == "SESSION_CLOSE":
            state.status = "closed"
        state.envelope_count += 1
        state.step_count += header.get("steps", 0)
        state.contributor_id = state.contributor_id or header.get("contributor_id")
        registry.save_state(conn, state, received)
        return [header["session_id"]] if header["kind"] == "SESSION_CLOSE" else []

    # ---- scoring --------------------------------------------------------------------------------

    def session_envelopes(self, session_id: str) -> list[dict[str, Any]]:
        """The session's stored envelopes, parsed, in sequence order."""
        with self._read_lock:
            rows = self._read.execute(
                "SELECT s.path, e.offset, e.length FROM envelopes e JOIN segments s USING (segment_id)"
                " WHERE e.session_id = ? ORDER BY e.sequence, e.received_at",
                (session_id,),
            ).fetchall()
        return [json.loads(read_frame(self.lake.root / row["path"], row["offset"], row["length"]).body) for row in rows]

    def finalize_close(self, session_id: str) -> dict[str, Any] | None:
        """Stitch, score from the steps, credit the contributor once; returns the credit."""
        stitched = stitch(session_id, self.session_envelopes(session_id))
        if not stitched.model_engine:  # chunks without metadata: the model named when the session opened
            with self._read_lock:
                row = self._read.execute("SELECT model FROM sessions WHERE session_id = ?", (session_id,)).fetchone()
            stitched.metadata["model_engine"] = row["model"] if row else None
        result = score(stitched)
        contributor = stitched.contributor_id
        if not contributor:
            return None
        with self._lock, registry.immediate(self._conn) as conn:
            ledger.credit(conn, contributor, session_id, result, time.time())
            return ledger.credit_of(conn, session_id)

    def close(self) -> None:
        with self._lock:
            if self._segment is not None:
                with registry.immediate(self._conn) as conn:
                    conn.execute("UPDATE segments SET status = 'sealed' WHERE segment_id = ?", (self._segment.segment_id,))
                self._segment.writer.close()
                self._segment = None
            self._conn.close()
            self._read.close()
