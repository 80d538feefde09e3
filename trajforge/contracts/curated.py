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
- `provenance`: one row per STEREOS `agent_action` (seed 003) of the raw lake, keyed by `event_id`, with the outcomes
  that name it folded in (`outcome`: the latest status, `outcome_count`, `outcomes`). Outcomes whose action the lake
  does not hold are kept too: one row per missing action, `action_found` false, its action fields null.

The `provenance` struct of the trajectories, sft and behaviour rows also carries the labels of the row's commits:
`agent_actions` (how many agent actions of the `provenance` table name one of the row's commits, at it or by an outcome's
`linked_commit`, short SHAs matching as the query API matches them) and `outcome` (the latest outcome of those actions).
"""

from __future__ import annotations

import pyarrow as pa

from trajforge.constants import EMBEDDING_DIM

TABLES = ("trajectories", "sft", "behavior", "duplicates", "provenance")
KEYS = {"trajectories": "session_id", "sft": "example_id", "behavior": "row_id", "duplicates": "dropped_session_id", "provenance": "event_id"}

PROVENANCE = pa.struct(
    [
        ("source", pa.string()),  # ingest | teacher | actor | dataset
        ("session_id", pa.string()),  # the session id, the task id of a loop run, or dataset:<name>:<sha256 prefix>
        ("contributor_id", pa.string()),  # null for public datasets' rows: no contributor who could be forgotten
        ("raw_ids", pa.list_(pa.string())),  # server envelope ids; `<file>:<line>` of trajectory records; an event: its id, then its `<file>:<line>`
        ("repos", pa.list_(pa.string())),
        ("commits", pa.list_(pa.string())),
        ("files", pa.list_(pa.string())),
        ("license", pa.string()),  # the SPDX licence a public dataset's row is used under; null for sessions and runs
        # labels from the build's `provenance` table (seed 003) for the row's `commits` (in one of its `repos`, if it names any):
        ("agent_actions", pa.int64()),  # how many agent actions name one of its commits (0: none, or the row names no commit)
        ("outcome", pa.string()),  # the latest outcome of those actions: accepted | rejected | superseded; null if none
        ("agent_action_ids", pa.list_(pa.string())),  # their event ids (the `provenance` table's key), sorted
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
ROWS_VERSION = 7  # 7: a loop run takes its task's split (a processed record's, else a hash of the task id)

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

PROVENANCE_OUTCOME = pa.struct([("event_id", pa.string()), ("status", pa.string()), ("linked_commit", pa.string()),
                                ("received_at", pa.float64()), ("raw_id", pa.string())])
PROVENANCE_ACTIONS = pa.schema(
    [
        ("event_id", pa.string()),  # the agent_action's id (what POST /v1/events answered); a missing action's: the id its outcomes name
        ("customer_id", pa.string()),
        ("action_found", pa.bool_()),  # false: outcomes name an action the lake does not hold (lost, damaged); its fields are null
        ("actor_type", pa.string()),
        ("actor_id", pa.string()),
        ("tool", pa.string()),
        ("intent", pa.string()),  # redacted with the build's redactor
        ("model", pa.string()),
        ("files_written", pa.list_(pa.string())),
        ("repo", pa.string()),
        ("branch", pa.string()),
        ("commit", pa.string()),
        ("diff_hash", pa.string()),
        ("timestamp", pa.float64()),  # unix seconds: the event's timestamp, else when it was received
        ("received_at", pa.float64()),
        ("token_id", pa.string()),  # the API token that sent it (its id, never the secret)
        ("raw_id", pa.string()),  # `<file>:<line>` of the raw record
        ("outcome", pa.string()),  # the latest outcome's status (by received_at, then the lake's order): accepted | rejected | superseded
        ("linked_commit", pa.string()),  # the latest outcome's linked_commit
        ("outcome_at", pa.float64()),  # when the latest outcome was received
        ("outcome_count", pa.int64()),
        ("outcomes", pa.list_(PROVENANCE_OUTCOME)),  # every outcome naming it, oldest first
    ]
)

SCHEMAS = {"trajectories": TRAJECTORIES, "sft": SFT, "behavior": BEHAVIOR, "duplicates": DUPLICATES, "provenance": PROVENANCE_ACTIONS}
