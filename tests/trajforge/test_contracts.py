"""Envelope validation: every limit of the specification's envelope schema, one rejection per rule."""

from __future__ import annotations

import copy
import time

import pytest

from trajforge.contracts.envelope import EnvelopeRejected, validate_envelope

NOW = time.time()


def chunk(**changes):
    envelope = {
        "session_id": "sess_1", "chunk_sequence": 0, "contributor_id": "a" * 32,
        "attestation": {"session_hmac": "b" * 64, "sequence": 0, "app_version_hash": "c" * 64},
        "metadata": {"provider": "codex", "model_engine": "gpt-5.5", "agent_role": "frontend", "agent_id": "frontend-3", "team_size": 3,
                     "task_complexity": "medium", "groove_version": "0.27.113", "domain_tags": None, "session_embedding": None,
                     "routing": None, "leaf_context": None, "session_quality": 50},
        "trajectory_log": [{"step": 1, "type": "thought", "timestamp": NOW - 5, "content": "plan", "token_count": 45},
                           {"step": 2, "type": "action", "timestamp": NOW - 4, "tool": "command_execution", "arguments": {"command": "ls"}, "content": "Executing: ls", "token_count": 12}],
    }
    for path, value in changes.items():
        node = envelope
        parts = path.split("__")
        for part in parts[:-1]:
            node = node[int(part)] if part.isdigit() else node[part]
        node[int(parts[-1]) if parts[-1].isdigit() else parts[-1]] = value
    return envelope


def rejected(envelope) -> EnvelopeRejected:
    with pytest.raises(EnvelopeRejected) as info:
        validate_envelope(envelope, now=NOW)
    return info.value


def test_the_specifications_example_chunk_is_valid():
    assert validate_envelope(chunk(), now=NOW).trajectory_log[1].tool == "command_execution"


@pytest.mark.parametrize("path, value, field", [
    ("trajectory_log__0__type", "daydream", "trajectory_log.0.type"),
    ("trajectory_log__0__content", "x" * 10_001, "trajectory_log.0.content"),
    ("trajectory_log__0__content", "😀" * 5_001, "trajectory_log.0.content"),  # 10,002 UTF-16 units, as JavaScript counts
    ("trajectory_log__0__token_count", 100_001, "trajectory_log.0.token_count"),
    ("trajectory_log__0__step", 50_001, "trajectory_log.0.step"),
    ("trajectory_log__0__timestamp", NOW - 8 * 86400, "trajectory_log.0.timestamp"),
    ("trajectory_log__0__timestamp", NOW + 3601, "trajectory_log.0.timestamp"),
    ("trajectory_log__0__timestamp", "yesterday", "trajectory_log.0.timestamp"),
    ("attestation__sequence", 1_000_001, "attestation.sequence"),
    ("attestation__sequence", "1", "attestation.sequence"),
    ("attestation__session_hmac", "b" * 63, "attestation.session_hmac"),
    ("attestation__app_version_hash", "g" * 64, "attestation.app_version_hash"),
    ("contributor_id", "a" * 31, "contributor_id"),
    ("chunk_sequence", -1, "chunk_sequence"),
    ("metadata__agent_role", "r" * 51, "metadata.agent_role"),
    ("metadata__agent_id", "i" * 101, "metadata.agent_id"),
    ("metadata__team_size", 0, "metadata.team_size"),
    ("metadata__team_size", 51, "metadata.team_size"),
    ("metadata__groove_version", "v" * 21, "metadata.groove_version"),
    ("metadata__task_complexity", "epic", "metadata.task_complexity"),
    ("metadata__domain_tags", {"primary": {"domain": "react_frontend", "confidence": 1.5}}, "metadata.domain_tags.primary.confidence"),
    ("metadata__session_embedding", {"model": "m", "vector": [], "source_text": "t"}, "metadata.session_embedding.vector"),
    ("metadata__session_embedding", {"model": "m", "vector": ["0.1"], "source_text": "t"}, "metadata.session_embedding.vector.0"),
    ("metadata__routing", {"leaf_id": "l", "routing_confidence": 0.5, "fallback_used": "no"}, "metadata.routing.fallback_used"),
    ("metadata__leaf_context", {"leaf_id": "l", "leaf_version": "1", "confidence_at_route": -0.1, "chassis_model": "c"}, "metadata.leaf_context.confidence_at_route"),
    # fields of optional (union) types: the path names the field, not the branch pydantic tried
    ("metadata__leaf_context", {"leaf_id": "l", "leaf_version": None, "confidence_at_route": 0.1, "chassis_model": "c"}, "metadata.leaf_context.leaf_version"),
    ("metadata__routing", {"leaf_id": "l", "routing_confidence": 0.5, "fallback_used": False, "parent_leaf_id": 3}, "metadata.routing.parent_leaf_id"),
    ("metadata__domain_tags", {"primary": "react_frontend"}, "metadata.domain_tags.primary"),
    ("metadata__session_embedding", "vector", "metadata.session_embedding"),
])
def test_each_limit_is_enforced_and_named(path, value, field):
    assert rejected(chunk(**{path: value})).field == field


def test_more_than_500_steps_is_refused():
    envelope = chunk()
    envelope["trajectory_log"] = [dict(envelope["trajectory_log"][0], step=i) for i in range(501)]
    assert rejected(envelope).field == "trajectory_log"


def test_a_chunk_with_no_steps_is_valid_and_one_without_a_log_is_not():
    envelope = chunk()
    envelope["trajectory_log"] = []
    assert validate_envelope(envelope, now=NOW).trajectory_log == []  # the specification sets a maximum only
    del envelope["trajectory_log"]
    assert rejected(envelope).field == "trajectory_log"


def test_limits_hold_at_their_edges():
    envelope = chunk(trajectory_log__0__content="x" * 10_000, trajectory_log__0__token_count=100_000, trajectory_log__0__step=50_000,
                     metadata__team_size=50, attestation__sequence=1_000_000, trajectory_log__0__timestamp=NOW + 3599)
    envelope["trajectory_log"] = envelope["trajectory_log"] * 250
    assert len(validate_envelope(envelope, now=NOW).trajectory_log) == 500


def test_close_and_feedback_envelopes():
    close = {"session_id": "s", "type": "SESSION_CLOSE", "attestation": chunk()["attestation"],
             "outcome": {"status": "SUCCESS", "quality_tier": "TIER_A", "training_exclusion_reason": None}}
    assert validate_envelope(close, now=NOW).outcome.status == "SUCCESS"
    bad = copy.deepcopy(close)
    bad["outcome"]["status"] = "DONE"
    assert rejected(bad).field == "outcome.status"
    bare = {key: value for key, value in close.items() if key != "outcome"}
    assert validate_envelope(bare, now=NOW).outcome is None  # the Node schema checks an outcome only when one is sent
    feedback = {"session_id": "s", "type": "USER_FEEDBACK", "attestation": chunk()["attestation"],
                "feedback": {"signal": "accepted", "timestamp": NOW, "context": "ok", "target_step": 45, "revision_rounds": 0, "delta_summary": None}}
    assert validate_envelope(feedback, now=NOW).feedback.signal == "accepted"
    feedback["feedback"]["signal"] = "liked"
    assert rejected(feedback).field == "feedback.signal"
    assert rejected(dict(feedback, type="PING")).field == "type"
