"""What the build derives from a session's own steps: quality, tier and its reason, training eligibility."""

from __future__ import annotations

from pipelines.build.derive import derive
from trajforge.stitch import StitchedSession


def _session(steps: list[dict], feedback: list[dict] | None = None) -> StitchedSession:
    return StitchedSession(session_id="sess_x", contributor_id="c", metadata={}, steps=steps, outcome=None,
                           feedback=feedback or [], total_chunks=1)


def _steps(*kinds: str) -> list[dict]:
    return [{"step": index, "type": kind, "timestamp": 100.0 + 5 * index, "token_count": 200} for index, kind in enumerate(kinds, 1)]


def test_a_session_without_steps_gets_no_credit():
    """A session whose only chunk was damaged has nothing to judge: TIER_C with its own reason, not the 60 the
    formula's base and its "no unrecovered error" bonus would give it."""
    derived = derive(_session([]))
    assert (derived.quality, derived.tier, derived.tier_reason) == (0, "TIER_C", "no_steps")
    assert not derived.training_eligible and derived.exclusion_reason == "too_few_steps"


def test_the_quality_formula_on_steps():
    resolved = derive(_session(_steps("instruction", "action", "observation", "error", "correction", "resolution")))
    assert (resolved.quality, resolved.tier, resolved.tier_reason) == (80, "TIER_A", "high_quality_recovered_errors")
    assert resolved.training_eligible and resolved.duration_s == 25.0
    plain = derive(_session(_steps("instruction", "action", "observation")))
    assert (plain.quality, plain.tier, plain.tier_reason) == (60, "TIER_B", "acceptable_quality")
    rejected = derive(_session(_steps("instruction", "action", "observation", "resolution"), [{"signal": "rejected"}]))
    assert (rejected.quality, rejected.tier, rejected.tier_reason) == (50, "TIER_B", "acceptable_quality")
    failing = derive(_session(_steps("instruction", "action", "error", "error")))
    assert (failing.quality, failing.tier, failing.tier_reason, failing.outcome) == (30, "TIER_C", "unresolved_errors", "unresolved_error")
