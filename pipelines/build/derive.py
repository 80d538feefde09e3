"""What a field session's steps say about it: outcome, quality, tier, training eligibility, provenance.

Everything here is derived from the stitched steps; the client's outcome block (its
`session_quality`, `quality_tier`, `training_eligible`, counts) is never read, only kept for
comparison as `reported_status`. The specification fixes the thresholds (`TIER_A_MIN_QUALITY` 70,
`TIER_B_MIN_QUALITY` 50, `TRAINING_MIN_STEPS` 5, `TRAINING_MIN_TOKENS` 500, `TRAINING_MIN_DURATION`
10 s) and the exclusion reasons; it does not say how `session_quality` is computed, so this is ours:

    quality = 50
            + 20  when a resolution step exists
            + 10  when there was no error step, or every error was recovered
            - 10  per unrecovered error (at most 30)
            -  5  per user intervention: a clarification, or an instruction after the first step (at most 15)
            + 15 / + 5 / - 5 / - 30  for the last feedback signal accepted / modified / iterated / rejected
    clamped to 0..100.

A recorded session that resolves its task with its errors recovered reaches 80 (TIER_A); one that
stops with an unrecovered error lands in TIER_C, as does one with no steps at all (quality 0, `no_steps`:
its only chunks were damaged or empty).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from trajforge.constants import (
    TIER_A_MIN_QUALITY,
    TIER_B_MIN_QUALITY,
    TRAINING_MIN_DURATION,
    TRAINING_MIN_STEPS,
    TRAINING_MIN_TOKENS,
)
from trajforge.scoring import errors_recovered
from trajforge.stitch import StitchedSession

FEEDBACK_POINTS = {"accepted": 15, "modified": 5, "iterated": -5, "rejected": -30}
PATH_KEYS = ("path", "file", "file_path", "filename", "target_file")
MAX_PROVENANCE_ITEMS = 50
_PATCH_FILE = re.compile(r"^(?:\*\*\* (?:Update|Add|Delete) File: |\+\+\+ b/|--- a/)(\S+)", re.MULTILINE)
_COMMIT_LINE = re.compile(r"^(?:commit\s+)?([0-9a-f]{7,40})\b", re.MULTILINE)
_COMMIT_MADE = re.compile(r"^\[[\w./-]+(?: \(root-commit\))? ([0-9a-f]{7,40})\]", re.MULTILINE)
_REPO = re.compile(r"(?:https?://|git@)((?:github\.com|gitlab\.com|bitbucket\.org)[/:][\w.-]+/[\w.-]+?)(?:\.git)?(?=[\s/\"')]|$)")


@dataclass(frozen=True)
class Derived:
    started_at: float
    duration_s: float
    action_steps: int
    observation_steps: int
    error_steps: int
    errors_recovered: int
    outcome: str
    quality: int
    tier: str
    tier_reason: str
    training_eligible: bool
    exclusion_reason: str | None
    feedback_signal: str | None


def interventions(steps: list[dict[str, Any]]) -> int:
    first = steps[0].get("step") if steps else None
    return sum(1 for step in steps if step.get("type") == "clarification" or (step.get("type") == "instruction" and step.get("step") != first))


def outcome_of(steps: list[dict[str, Any]]) -> str:
    """`resolved` (a resolution, no error left open after it), `unresolved_error`, or `incomplete`."""
    open_error = resolved = False
    for step in steps:
        kind = step.get("type")
        if kind == "error":
            open_error = True
        elif kind in ("correction", "resolution"):
            open_error = False
            resolved = resolved or kind == "resolution"
    if open_error:
        return "unresolved_error"
    return "resolved" if resolved else "incomplete"


def tier_of(quality: int) -> str:
    return "TIER_A" if quality >= TIER_A_MIN_QUALITY else "TIER_B" if quality >= TIER_B_MIN_QUALITY else "TIER_C"


def exclusion_of(total_steps: int, actions: int, observations: int, tokens: int, duration_s: float) -> str | None:
    """The first failed training limit, in the specification's order, or None when eligible."""
    if total_steps < TRAINING_MIN_STEPS:
        return "too_few_steps"
    if actions == 0:
        return "no_actions"
    if observations == 0:
        return "no_observations"
    if tokens < TRAINING_MIN_TOKENS:
        return "insufficient_tokens"
    if duration_s < TRAINING_MIN_DURATION:
        return "too_short"
    return None


def derive(session: StitchedSession) -> Derived:
    steps = session.steps
    kinds = session.step_type_distribution
    times = [float(step["timestamp"]) for step in steps if isinstance(step.get("timestamp"), (int, float))]
    duration = max(times) - min(times) if times else 0.0
    errors = kinds.get("error", 0)
    recovered = errors_recovered(steps)
    unrecovered = max(errors - recovered, 0)
    signal = next((item.get("signal") for item in reversed(session.feedback) if isinstance(item, dict) and item.get("signal")), None)
    quality = 50 + (20 if kinds.get("resolution") else 0) + (10 if unrecovered == 0 else 0)
    quality -= min(10 * unrecovered, 30) + min(5 * interventions(steps), 15)
    quality += FEEDBACK_POINTS.get(signal, 0)
    quality = max(0, min(100, quality)) if steps else 0  # nothing to judge (its only chunk was damaged): no credit
    tier = tier_of(quality)
    if not steps:
        reason = "no_steps"
    elif tier == "TIER_A":
        reason = "high_quality_no_errors" if errors == 0 else "high_quality_recovered_errors"
    elif tier == "TIER_B":
        reason = "acceptable_quality"
    else:
        reason = "rejected_by_user" if signal == "rejected" else "unresolved_errors" if unrecovered else "no_resolution"
    actions, observations = kinds.get("action", 0), kinds.get("observation", 0)
    exclusion = exclusion_of(len(steps), actions, observations, session.total_tokens, duration)
    return Derived(
        started_at=min(times) if times else 0.0, duration_s=round(duration, 3), action_steps=actions, observation_steps=observations,
        error_steps=errors, errors_recovered=recovered, outcome=outcome_of(steps), quality=quality, tier=tier, tier_reason=reason,
        training_eligible=exclusion is None, exclusion_reason=exclusion, feedback_signal=signal,
    )


def mentions(steps: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Repositories, commits and files the steps name (tool arguments, patches, git output)."""
    repos: set[str] = set()
    commits: set[str] = set()
    files: set[str] = set()
    after_git = False
    for step in steps:
        content = step.get("content") if isinstance(step.get("content"), str) else ""
        arguments = step.get("arguments") if isinstance(step.get("arguments"), dict) else {}
        for key in PATH_KEYS:
            if isinstance(arguments.get(key), str) and arguments[key]:
                files.add(arguments[key])
        for value in arguments.values():
            if isinstance(value, str):
                files.update(_PATCH_FILE.findall(value))
                repos.update(_REPO.findall(value))
        repos.update(_REPO.findall(content))
        if step.get("type") == "observation" and after_git:
            commits.update(_COMMIT_LINE.findall(content))
            commits.update(_COMMIT_MADE.findall(content))
        if step.get("type") in ("action", "edit"):
            after_git = "git " in str(arguments.get("command") or content)
    cap = MAX_PROVENANCE_ITEMS
    return {"repos": sorted(repos)[:cap], "commits": sorted(commits)[:cap], "files": sorted(files)[:cap]}


def metadata_mentions(metadata: dict[str, Any], found: dict[str, list[str]]) -> dict[str, list[str]]:
    """`found` (what `mentions` found in the steps) with the repository and commit the session's envelope metadata names:
    `repo`/`repository` and `commit`/`commit_sha`, the names a telemetry event's payload gives them by (the protocol's
    metadata takes extra fields, so an agent can say where it worked)."""
    def strings(*keys: str) -> list[str]:
        return [str(metadata[key]) for key in keys if isinstance(metadata.get(key), (str, int)) and not isinstance(metadata[key], bool) and metadata[key] != ""]

    merged = dict(found)
    for name, keys in (("repos", ("repo", "repository")), ("commits", ("commit", "commit_sha"))):
        given = strings(*keys)
        merged[name] = sorted(set(given) | set(found[name]))[:MAX_PROVENANCE_ITEMS] if given else found[name]
    return merged
