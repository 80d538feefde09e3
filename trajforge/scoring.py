"""TrajectoryScorer (seed 004): contributor points from the stitched steps, never from client-reported counts.

    base        = min(steps, 5000)
    multiplier  = MODEL_TIERS[model_engine] or 1
    correction  = min(correction steps, 30% of steps) * 10
    coordination= min(coordination steps, 20% of steps) * 5
    recovery    = min(errors recovered, error steps) * 3
    complexity  = base if the task is heavy else 0
    subtotal    = base * multiplier + the four bonuses
    quality     = floor(subtotal * 0.1) if the session has a resolution step and 5..5000 steps else 0
    total       = subtotal + quality

An error step counts as recovered when a `correction` or `resolution` step follows it before the next
error step: the steps show the agent dealt with it, whatever the client's outcome block claims.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trajforge.constants import MODEL_TIERS, QUALITY_MULTIPLIERS
from trajforge.stitch import StitchedSession

MAX_BASE_POINTS = 5000
QUALITY_MIN_STEPS = 5


@dataclass(frozen=True)
class Score:
    total_points: float
    base_points: int
    breakdown: dict[str, Any]


def errors_recovered(steps: list[dict[str, Any]]) -> int:
    recovered = 0
    open_error = False
    for step in steps:
        kind = step.get("type")
        if kind == "error":
            open_error = True
        elif open_error and kind in ("correction", "resolution"):
            recovered += 1
            open_error = False
    return recovered


def score(session: StitchedSession, model_tiers: Mapping[str, float] = MODEL_TIERS) -> Score:
    steps = session.steps
    count = len(steps)
    kinds = session.step_type_distribution
    base = min(count, MAX_BASE_POINTS)
    model = session.model_engine
    multiplier = model_tiers.get(model, 1) if model else 1
    correction = min(kinds.get("correction", 0), count * 0.3) * QUALITY_MULTIPLIERS["correction"]
    coordination = min(kinds.get("coordination", 0), count * 0.2) * QUALITY_MULTIPLIERS["coordination"]
    error_steps = kinds.get("error", 0)
    recovered = errors_recovered(steps)
    recovery = min(recovered, error_steps) * QUALITY_MULTIPLIERS["errorRecovery"]
    heavy = session.metadata.get("task_complexity") == "heavy"
    complexity = base if heavy else 0
    subtotal = base * multiplier + correction + coordination + recovery + complexity
    has_resolution = kinds.get("resolution", 0) > 0
    quality = math.floor(subtotal * 0.1) if has_resolution and QUALITY_MIN_STEPS <= count <= MAX_BASE_POINTS else 0
    total = subtotal + quality
    breakdown = {
        "model": model,
        "model_multiplier": multiplier,
        "base_points": base,
        "correction_bonus": correction,
        "coordination_bonus": coordination,
        "error_recovery_bonus": recovery,
        "errors_recovered": recovered,
        "complexity_bonus": complexity,
        "quality_bonus": quality,
        "subtotal": subtotal,
        "steps": count,
    }
    return Score(total_points=float(total), base_points=base, breakdown=breakdown)
