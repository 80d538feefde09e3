"""Constants of the Central Command protocol (seed 004, `shared/constants.js` and `envelope-schema.js`)."""

from types import MappingProxyType

SUPPORTED_PROVIDERS = ("claude-code", "codex", "gemini")

MODEL_TIERS = MappingProxyType(
    {
        "claude-opus-4-6": 5,
        "claude-opus-4-7": 5,
        "claude-sonnet-4-6": 3,
        "gpt-4.5": 5,
        "gpt-5.5": 5,
        "o3": 5,
        "o4-mini": 2,
        "gemini-2.5-pro": 3,
        "gemini-2.5-flash": 1.5,
    }
)

QUALITY_MULTIPLIERS = MappingProxyType(
    {"correction": 10, "coordination": 5, "errorRecovery": 3, "heavyTask": 2, "highQuality": 1.5}
)

STEP_TYPES = (
    "thought",
    "action",
    "observation",
    "correction",
    "resolution",
    "error",
    "coordination",
    "edit",
    "instruction",
    "clarification",
    "approval",
)
QUALITY_TIERS = ("TIER_A", "TIER_B", "TIER_C")
FEEDBACK_SIGNALS = ("accepted", "modified", "rejected", "iterated")
OUTCOME_STATUSES = ("SUCCESS", "CRASH", "KILLED")
COMPLEXITIES = ("light", "medium", "heavy")

MAX_STEPS_PER_ENVELOPE = 500
MAX_STEP_CONTENT_CHARS = 10_000
MAX_STEP_TOKEN_COUNT = 100_000
MAX_STEP_NUMBER = 50_000
MAX_TIMESTAMP_AGE_S = 7 * 24 * 3600
MAX_TIMESTAMP_AHEAD_S = 3600
MAX_SEQUENCE = 1_000_000
MAX_AGENT_ROLE_CHARS = 50
MAX_AGENT_ID_CHARS = 100
MAX_GROOVE_VERSION_CHARS = 20
TEAM_SIZE_RANGE = (1, 50)

TIER_A_MIN_QUALITY = 70
TIER_B_MIN_QUALITY = 50
TRAINING_MIN_STEPS = 5
TRAINING_MIN_TOKENS = 500
TRAINING_MIN_DURATION = 10
TRAINING_EXCLUSION_REASONS = ("too_few_steps", "no_actions", "no_observations", "insufficient_tokens", "too_short")

MAX_BODY_BYTES = 5 * 1024 * 1024

# The client's (`shared/constants.js`): steps a recorded CHUNK carries, the age of its first step at which it goes
# anyway, and envelopes its outbox (the spool) may hold waiting for the service.
CHUNK_SIZE = 200
CHUNK_TIMEOUT_MS = 300_000
MAX_QUEUE_SIZE = 10_000
MAX_BATCH_ENVELOPES = 500
EMBEDDING_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
EMBEDDING_DIM = 384
