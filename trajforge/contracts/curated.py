"""The curated lake's tables: the Arrow schemas `pipelines/build` writes and every reader relies on.

A build writes `lake/curated/<build id>/` with one Parquet dataset per table below plus `manifest.json`.
Rows are sorted by their key column and carry no build id or time, so the same raw lake gives
byte-identical files; the build id names the folder and the manifest.

- `trajectories`: one row per session (field sessions from the ingest service, and tasks run by the
  teacher or the generation actors), keyed by `session_id`.
- `sft`: chat-format rows the learner trains on, keyed by `example_id`. `messages[i].loss` says
  whether the learner computes loss on that message (assistant turns); `split` is `train` or `dev`, or `test` for a
  teacher/actor run of a processed test record's task (held out: the learner reads train and dev only).
- `behavior`: model errors and behaviours (the Starcode export's behavior rows), keyed by `row_id`.
- `duplicates`: what deduplication dropped and the row each dropped one duplicated.
"""

from __future__ import annotations

import pyarrow as pa

from trajforge.constants import EMBEDDING_DIM

TABLES = ("trajectories", "sft", "behavior", "duplicates")
KEYS = {"trajectories": "session_id", "sft": "example_id", "behavior": "row_id", "duplicates": "dropped_session_id"}

PROVENANCE = pa.struct(
    [
        ("source", pa.string()),  # ingest | teacher | actor | dataset
        ("session_id", pa.string()),  # the session id, the task id of a loop run, or dataset:<name>:<sha256 prefix>
        ("contributor_id", pa.string()),  # null for public datasets' rows: no contributor who could be forgotten
        ("raw_ids", pa.list_(pa.string())),  # server envelope ids, or `<file>:<line>` of trajectory records
        ("repos", pa.list_(pa.string())),
        ("commits", pa.list_(pa.string())),
        ("files", pa.list_(pa.string())),
        ("license", pa.string()),  # the SPDX licence a public dataset's row is used under; null for sessions and runs
    ]
)
COUNT = pa.struct([("kind", pa.string()), ("count", pa.int64())])
DOMAIN_TAG = pa.struct([("domain", pa.string()), ("confidence", pa.float32())])
# seed 004's `domain_tags` object (primary/secondary/tertiary, each {domain, confidence}), with the DomainTagger's
# `method` (embedding | keywords); a rank keyword tagging did not fill is null, and so is the whole value with no rank
DOMAIN_TAGS = pa.struct([("primary", DOMAIN_TAG), ("secondary", DOMAIN_TAG), ("tertiary", DOMAIN_TAG), ("method", pa.string())])
MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string()), ("loss", pa.bool_())])
REWARD = pa.struct([("verified", pa.bool_()), ("matches_gold", pa.bool_()), ("tests_pass", pa.bool_())])  # a trajectory record's reward

# What a build derives from the same raw records: bumped whenever that changes (a column, a rule of stitching,
# scoring, tagging, dedup or eligibility), so the next build does not reuse rows an older version derived.
ROWS_VERSION = 4

TRAJECTORIES = pa.schema(
    [
        ("session_id", pa.string()),
        ("source", pa.string()),
        ("contributor_id", pa.string()),
        ("provider", pa.string()),
        ("model_engine", pa.string()),
        ("agent_role", pa.string()),
        ("task_complexity", pa.string()),
        ("started_at", pa.float64()),  # unix seconds of the first step
        ("duration_s", pa.float64()),  # last step's timestamp minus the first's
        ("total_steps", pa.int32()),
        ("total_tokens", pa.int64()),
        ("total_chunks", pa.int32()),
        ("missing_chunks", pa.list_(pa.int32())),
        ("duplicate_steps", pa.list_(pa.int32())),
        ("action_steps", pa.int32()),
        ("observation_steps", pa.int32()),
        ("error_steps", pa.int32()),
        ("errors_recovered", pa.int32()),
        ("unique_tools", pa.list_(pa.string())),
        ("reported_status", pa.string()),  # the client's SUCCESS | CRASH | KILLED, kept for comparison only
        ("outcome", pa.string()),  # derived from the steps: resolved | unresolved_error | incomplete
        ("quality", pa.int32()),  # 0..100, derived from the steps
        ("tier", pa.string()),  # TIER_A | TIER_B | TIER_C
        ("tier_reason", pa.string()),
        ("training_eligible", pa.bool_()),
        # field sessions: one of TRAINING_EXCLUSION_REASONS; teacher/actor runs: "unverified", or "held_out_test" (a run of a
        # processed test task, its sft rows split test); or null
        ("exclusion_reason", pa.string()),
        ("score", pa.float64()),  # the TrajectoryScorer's total points
        ("score_breakdown", pa.string()),  # JSON
        ("feedback_signal", pa.string()),  # the last USER_FEEDBACK signal, or null
        ("domain", pa.string()),  # the primary domain tag; null when keyword tagging found no domain's keyword
        ("domain_tags", DOMAIN_TAGS),
        ("embedding", pa.list_(pa.float32(), EMBEDDING_DIM)),  # null when the build ran without embeddings
        ("content_hash", pa.string()),  # sha256 of the normalized step text (exact dedup key)
        ("redactions", pa.list_(COUNT)),
        ("provenance", PROVENANCE),
    ]
)

SFT = pa.schema(
    [
        ("example_id", pa.string()),
        ("source", pa.string()),
        ("session_id", pa.string()),
        ("step", pa.int32()),  # the verified step of a teacher/actor task; null for a whole field session
        ("split", pa.string()),  # train | dev, a stable hash of session_id; test for a teacher/actor run of a held-out test task
        ("tier", pa.string()),
        ("score", pa.float64()),
        ("messages", pa.list_(MESSAGE)),
        ("num_tokens", pa.int32()),  # counted with the manifest's `tokenizer`
        ("loss_tokens", pa.int32()),  # tokens of the messages with loss = true
        # a teacher/actor step's record (seed 002 section 7, "converted to Parquet with additional reward columns"):
        ("reward", REWARD),  # its three rewards; null for a field session
        ("model", pa.string()),  # the model that wrote the step, its sampling temperature and seed; null for a field session
        ("temperature", pa.float64()),
        ("seed", pa.int64()),
        ("provenance", PROVENANCE),
    ]
)

BEHAVIOR = pa.schema(
    [
        ("row_id", pa.string()),
        ("kind", pa.string()),  # model_error | behavior
        ("behavior", pa.string()),  # e.g. error_recovered, error_unrecovered, correction, user_intervention, sandbox_failure
        ("session_id", pa.string()),
        ("step", pa.int32()),
        ("source", pa.string()),
        ("provider", pa.string()),
        ("model_engine", pa.string()),
        ("tool", pa.string()),
        ("content", pa.string()),
        ("context", pa.string()),  # the step before it
        ("recovered", pa.bool_()),
        ("provenance", PROVENANCE),
    ]
)

DUPLICATES = pa.schema(
    [
        ("dropped_session_id", pa.string()),
        ("kept_session_id", pa.string()),
        ("kind", pa.string()),  # exact | near
        ("similarity", pa.float64()),  # estimated Jaccard of the step shingles (1.0 for exact)
        ("dropped_score", pa.float64()),
        ("kept_score", pa.float64()),
    ]
)

SCHEMAS = {"trajectories": TRAJECTORIES, "sft": SFT, "behavior": BEHAVIOR, "duplicates": DUPLICATES}
