"""The build's Ray Data stage: one batch of sessions -> staged rows of every table.

Each input row names up to `sessions_per_batch` sessions and where their records are. The stage
reads those records by offset, stitches, redacts, derives, scores and renders the rows, writes the
batch's staging Parquet files (`_stage/<table>/<origin>-b<index>.parquet`, replaced atomically, so
a retried task leaves one copy) and passes on only what the next stage needs: the session id and
the text to embed. A session whose records cannot be read or make no sense is quarantined with its
reason; the rest of the batch goes on.
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.build import dedup, field_rows, held_out, loop_rows
from pipelines.build.derive import derive, mentions, metadata_mentions
from pipelines.build.settings import BuildSettings
from pipelines.build.sources import Quarantined, read_bytes
from pipelines.build.staging import STAGE_SCHEMAS, stage_file
from pipelines.build.tokens import count_sft_tokens
from trajforge.atomic import replacing, write_atomic
from trajforge.raw_segments import decode_frame
from trajforge.scoring import Score
from trajforge.stitch import StitchedSession, stitch
from trajforge.trajectories import REWARD_LABELS, reward_labels

KEYWORD_TAG_CHARS = 8000  # keyword domain tags (the fallback without embeddings) read the session's start


@functools.lru_cache(maxsize=2)
def _tools(settings_json: str):
    from pipelines.build.tokens import TokenCounter
    from trajforge.domains import DomainTagger
    from trajforge.redaction import Redactor

    settings = BuildSettings.model_validate_json(settings_json)
    return settings, Redactor(settings.redaction), TokenCounter(settings.tokenizer), DomainTagger()


def split_of(session_id: str, dev_fraction: float) -> str:
    bucket = int(dedup.content_hash(session_id)[:8], 16) / 0x100000000
    return "dev" if bucket < dev_fraction else "train"


def _counts(counter: Counter) -> list[dict[str, Any]]:
    return [{"kind": kind, "count": int(count)} for kind, count in sorted(counter.items()) if count]


def _tags(tagger, text: str) -> tuple[str | None, dict[str, Any] | None]:
    """The primary domain and the keyword tags in seed 004's `domain_tags` shape; both None when no keyword of any
    domain is in the text."""
    tags = tagger.tag_keywords(text)
    return (tags["primary"]["domain"], tags) if "primary" in tags else (None, None)


class BatchBuilder:
    """Rows of one batch, accumulated per table; one instance per input row."""

    def __init__(self, settings_json: str, lake_root: str):
        self.settings, self.redactor, self.counter, self.tagger = _tools(settings_json)
        self.lake_root = lake_root
        self.rows: dict[str, list[dict[str, Any]]] = {"trajectories": [], "sft": [], "behavior": []}
        self.quarantined: list[Quarantined] = []
        self.passed: list[tuple[str, str]] = []

    def add_session(self, entry: dict[str, Any]) -> None:
        try:
            if entry["source"] == "ingest":
                self._field(entry)
            else:
                self._loop(entry)
        except Exception as exc:  # bad data never stops a build: the session goes to quarantine with its reason
            first = entry["refs"][0]
            self.quarantined.append(Quarantined(entry["source"], first[0], first[2], first[3],
                                                f"session {entry['session_id']} could not be built: {type(exc).__name__}: {exc}"[:500]))

    def _read_envelopes(self, entry: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
        envelopes, ids = [], []
        for relative, raw_id, offset, length in entry["refs"]:
            frame = decode_frame(read_bytes(self.lake_root, relative, offset, length))
            reason = None
            if frame is None or frame.length != length:
                reason = "frame changed or damaged since it was indexed"
            else:
                try:
                    body = json.loads(frame.body)
                    reason = None if isinstance(body, dict) else "envelope body is not a JSON object"
                except ValueError:
                    reason = "envelope body is not JSON"
            if reason:
                self.quarantined.append(Quarantined("ingest", relative, offset, length, reason))
                continue
            envelopes.append(body)
            ids.append(raw_id)
        return envelopes, ids

    def _finish(self, row: dict[str, Any], parts: list[str], work: list[str], text_for_embedding: str, redactions: Counter, fingerprint: str) -> None:
        text = dedup.normalized_text(parts)
        options = self.settings.dedup
        row["domain"], row["domain_tags"] = _tags(self.tagger, text[:KEYWORD_TAG_CHARS])
        row.update(embedding=None, content_hash=dedup.content_hash(text), redactions=_counts(redactions), fingerprint=fingerprint,
                   minhash=dedup.signature(dedup.normalized_text(work) or text, options.shingle_size, options.num_perm, options.seed))
        self.rows["trajectories"].append(row)
        self.passed.append((row["session_id"], text_for_embedding or text[:512]))

    def _sft(self, session_id: str, source: str, step: int | None, example_id: str, messages: list[dict[str, Any]], tier: str,
             points: float, provenance: dict[str, Any], record: dict[str, Any] | None = None, split: str | None = None) -> None:
        """One sft row; `record`: the teacher/actor step it comes from, whose reward and sampling it keeps; `split`: a fixed
        split (a held-out test task's run), else train or dev by the session id's hash."""
        reward = reward_labels(record or {})
        self.rows["sft"].append({
            "example_id": example_id, "source": source, "session_id": session_id, "step": step,
            "split": split or split_of(session_id, self.settings.sft.dev_fraction), "tier": tier, "score": points, "messages": messages,
            "num_tokens": None, "loss_tokens": None,
            "reward": {key: reward.get(key) for key in REWARD_LABELS} if record else None,
            "model": (record or {}).get("model"), "temperature": (record or {}).get("temperature"), "seed": (record or {}).get("seed"),
            "provenance": provenance,
        })

    def _count_tokens(self) -> None:
        """Token counts of every sft row of the batch, in one tokenizer call (it spreads over threads)."""
        count_sft_tokens(self.rows["sft"], self.counter)

    def _field(self, entry: dict[str, Any]) -> None:
        envelopes, ids = self._read_envelopes(entry)
        if not envelopes:
            return
        stitched = stitch(entry["session_id"], envelopes)
        if "score" not in entry:  # scored for the whole lake at once by the columnar stage (pipelines/build/columns.py)
            raise ValueError(entry.get("unscorable") or "the columnar stage did not score this session")
        points = Score(**entry["score"])
        redactions: Counter = Counter()
        steps = []
        for step in stitched.steps:
            clean, found = self.redactor.redact_tree(step)
            steps.append(clean)
            redactions.update(found)
        metadata = {key: value for key, value in stitched.metadata.items() if key != "session_embedding"}
        metadata, found = self.redactor.redact_tree(metadata)
        redactions.update(found)
        feedback, found = self.redactor.redact_tree(stitched.feedback)
        redactions.update(found)
        session = StitchedSession(stitched.session_id, stitched.contributor_id, metadata, steps, stitched.outcome, feedback,
                                  stitched.total_chunks, stitched.missing_chunks, stitched.duplicate_steps)
        derived = derive(session)
        provenance = {"source": "ingest", "session_id": session.session_id, "contributor_id": session.contributor_id,
                      "raw_ids": sorted(ids), **metadata_mentions(metadata, mentions(steps))}
        row = field_rows.trajectory_row(session, derived, points, provenance)
        if derived.training_eligible and derived.tier in self.settings.sft.tiers:
            messages = field_rows.chat(steps, self.settings.sft.system_prompt)
            self._sft(session.session_id, "ingest", None, session.session_id, messages, derived.tier, points.total_points, provenance)
        self.rows["behavior"] += field_rows.behavior_rows(session, provenance)
        self._finish(row, field_rows.dedup_parts(session), field_rows.dedup_parts(session, work_only=True), field_rows.embed_text(session),
                     redactions, entry["fingerprint"])

    def _loop(self, entry: dict[str, Any]) -> None:
        records, ids, redactions = [], [], Counter()
        for relative, raw_id, offset, length in entry["refs"]:
            record = json.loads(read_bytes(self.lake_root, relative, offset, length))
            clean, found = self.redactor.redact_tree({key: value for key, value in record.items() if key != "completions"})
            clean["completions"] = record.get("completions")
            records.append(clean)
            ids.append(raw_id)
            redactions.update(found)
        records.sort(key=lambda record: (float(record.get("created_at") or 0.0), int(record.get("step") or 0)))
        source, session_id = entry["source"], entry["session_id"]
        provenance = {"source": source, "session_id": session_id, "contributor_id": None, "raw_ids": sorted(ids),
                      "repos": [], "commits": [], "files": sorted({path for r in records for path in (r.get("files") or [])})}
        row = loop_rows.run_rows(session_id, source, records, provenance)
        # the split of the processed record whose task it runs (the driver's mark), else its task's: all runs of a task in one
        split = entry.get(held_out.SECTION) or split_of(held_out.task_of(session_id), self.settings.sft.dev_fraction)
        if split == held_out.SPLIT:
            row.update(training_eligible=False, exclusion_reason=held_out.REASON)
        for record in records:
            if loop_rows.good_step(record):
                step = int(record.get("step") or 0)
                self._sft(session_id, source, step, f"{session_id}#step{step:03d}", loop_rows.sft_messages(record), row["tier"], row["score"],
                          provenance, record, split)
        self.rows["behavior"] += loop_rows.behavior_rows(session_id, source, records, provenance)
        task = loop_rows.task_text(records[0])
        # The task (instruction and code) is part of the content: one rewrite rule applied to two different
        # snippets is two examples, while the same task answered the same way twice is one.
        parts = [task, *(loop_rows.completion(record) for record in records)]
        self._finish(row, parts, parts, task[:512], redactions, entry["fingerprint"])

    def write(self, stage_dir: Path, origin: str, index: int) -> None:
        self._count_tokens()
        for table, rows in self.rows.items():
            for row in rows:
                row["_origin"] = origin
            path = stage_file(stage_dir, table, origin, index)
            with replacing(path) as temporary:
                pq.write_table(pa.Table.from_pylist(rows, schema=STAGE_SCHEMAS[table]), temporary)
        quarantine = stage_file(stage_dir, "quarantine", origin, index, suffix=".json")
        write_atomic(quarantine, json.dumps([item.as_dict() for item in self.quarantined]).encode())


def process_batch(batch: dict[str, Any], *, lake_root: str, stage_dir: str, origin: str, settings_json: str) -> dict[str, list]:
    """Ray Data `map_batches` function: rows `{batch_index, sessions}` -> rows `{session_id, embed_text}`."""
    ids: list[str] = []
    texts: list[str] = []
    for index, sessions in zip(batch["batch_index"], batch["sessions"]):
        builder = BatchBuilder(settings_json, lake_root)
        for entry in json.loads(sessions):
            builder.add_session(entry)
        builder.write(Path(stage_dir), origin, int(index))
        ids += [session_id for session_id, _ in builder.passed]
        texts += [text for _, text in builder.passed]
    return {"session_id": ids, "embed_text": texts}

