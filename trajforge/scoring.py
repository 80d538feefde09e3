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

`score_columns` is the one implementation, over arrays of many sessions' stitched steps at once (the
build scores a whole lake in one call); `score` is the same for one stitched session (the ingest
ledger on SESSION_CLOSE).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from trajforge.constants import MODEL_TIERS, QUALITY_MULTIPLIERS
from trajforge.stitch import StitchedSession

MAX_BASE_POINTS = 5000
QUALITY_MIN_STEPS = 5
# Step types the formula counts, as small integer codes (0: any other type).
KIND_CODES = {"error": 1, "correction": 2, "resolution": 3, "coordination": 4}
BREAKDOWN_FIELDS = ("model_multiplier", "base_points", "correction_bonus", "coordination_bonus", "error_recovery_bonus",
                    "errors_recovered", "complexity_bonus", "quality_bonus", "subtotal", "steps", "total_points")


@dataclass(frozen=True)
class Score:
    total_points: float
    base_points: int
    breakdown: dict[str, Any]


def kind_codes(types: Sequence[Any]) -> np.ndarray:
    """Step types (strings; anything else counts as no type) as the formula's integer codes."""
    return np.fromiter((KIND_CODES.get(kind, 0) if isinstance(kind, str) else 0 for kind in types), dtype=np.int8, count=len(types))


def _per_session(groups: np.ndarray, sessions: int, mask: np.ndarray | None = None) -> np.ndarray:
    return np.bincount(groups if mask is None else groups[mask], minlength=sessions).astype(np.int64)


def score_columns(groups: np.ndarray, kinds: np.ndarray, models: Sequence[str | None], heavy: np.ndarray,
                  model_tiers: Mapping[str, float] = MODEL_TIERS) -> dict[str, np.ndarray]:
    """The formula for many sessions: one entry per kept step, in stitched order (grouped by session,
    sorted by step number), with its session index (`groups`) and `kind_codes`; per session its model
    and whether the task is heavy. Returns one array per `BREAKDOWN_FIELDS` name, indexed by session."""
    sessions = len(models)
    count = _per_session(groups, sessions)
    of_kind = {name: _per_session(groups, sessions, kinds == code) for name, code in KIND_CODES.items()}
    flow = np.flatnonzero((kinds >= 1) & (kinds <= 3))  # the error / correction / resolution steps, in order
    flow_kinds, flow_groups = kinds[flow], groups[flow]
    recovers = (flow_kinds[1:] >= 2) & (flow_kinds[:-1] == 1) & (flow_groups[1:] == flow_groups[:-1])
    recovered = np.bincount(flow_groups[1:][recovers], minlength=sessions).astype(np.int64)

    base = np.minimum(count, MAX_BASE_POINTS)
    multiplier = np.array([model_tiers.get(model, 1) if model else 1 for model in models], dtype=np.float64)
    correction = np.minimum(of_kind["correction"], count * 0.3) * QUALITY_MULTIPLIERS["correction"]
    coordination = np.minimum(of_kind["coordination"], count * 0.2) * QUALITY_MULTIPLIERS["coordination"]
    recovery = np.minimum(recovered, of_kind["error"]) * QUALITY_MULTIPLIERS["errorRecovery"]
    complexity = np.where(heavy, base, 0)
    subtotal = base * multiplier + correction + coordination + recovery + complexity
    qualifies = (of_kind["resolution"] > 0) & (count >= QUALITY_MIN_STEPS) & (count <= MAX_BASE_POINTS)
    quality = np.where(qualifies, np.floor(subtotal * 0.1), 0.0)
    return {"model_multiplier": multiplier, "base_points": base, "correction_bonus": correction, "coordination_bonus": coordination,
            "error_recovery_bonus": recovery, "errors_recovered": recovered, "complexity_bonus": complexity, "quality_bonus": quality,
            "subtotal": subtotal, "steps": count, "total_points": subtotal + quality}


def _plain(value: Any) -> int | float:
    """A number as JSON would carry it from the seed's JavaScript: integral values as integers."""
    number = float(value)
    return int(number) if number.is_integer() else number


def score_of(columns: dict[str, np.ndarray], index: int, model: str | None) -> Score:
    """Session `index` of `score_columns`' result as a Score, its breakdown in plain JSON numbers."""
    breakdown: dict[str, Any] = {"model": model}
    breakdown.update({name: _plain(columns[name][index]) for name in BREAKDOWN_FIELDS if name != "total_points"})
    return Score(total_points=float(columns["total_points"][index]), base_points=int(columns["base_points"][index]), breakdown=breakdown)


def errors_recovered(steps: list[dict[str, Any]]) -> int:
    """Error steps a later correction or resolution dealt with (the scorer's recovery count)."""
    kinds = kind_codes([step.get("type") for step in steps])
    return int(score_columns(np.zeros(len(kinds), dtype=np.int64), kinds, [None], np.zeros(1, dtype=bool))["errors_recovered"][0])


def score(session: StitchedSession, model_tiers: Mapping[str, float] = MODEL_TIERS) -> Score:
    """The formula for one stitched session."""
    kinds = kind_codes([step.get("type") for step in session.steps])
    heavy = np.array([session.metadata.get("task_complexity") == "heavy"])
    columns = score_columns(np.zeros(len(kinds), dtype=np.int64), kinds, [session.model_engine], heavy, model_tiers)
    return score_of(columns, 0, session.model_engine)
