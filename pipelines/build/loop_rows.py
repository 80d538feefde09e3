"""One run of one task by the teacher or a generation actor (its step records) as curated rows.

- The trajectory row: one per run (`<source>:<task id>:<run id>`). Its steps are scored by the same
  TrajectoryScorer as field sessions, through the step types they amount to: each record is an
  `action` with its sandbox `observation`; an action the sandbox refused, malformed output or an
  engine error is an `error`; the solving step adds a `resolution`.
- sft rows: one per verified step (the sandbox applied the action, its tests passed where it had
  some, and the result is not known to differ from the gold one): the recorded prompt (system,
  state, instruction, code, feedback) without loss, then `<think>/<action>/<state_update>` as the
  assistant's completion with loss.
- behaviour rows: refused actions, malformed output, engine errors, results that differ from gold.

Quality: 100 for a task solved at its first step, 20 less per further step (at least 60); 40 for
an unsolved run that verified an action; 10 otherwise. A run with no verified step is not
training-eligible (`unverified`).
"""

from __future__ import annotations

import json
from typing import Any

from pipelines.build.derive import tier_of
from pipelines.build.event_rows import json_text
from trajforge.scoring import score
from trajforge.stitch import StitchedSession
from trajforge.trajectories import good_step, reward_labels

UNVERIFIED = "unverified"


def completion(record: dict[str, Any]) -> str:
    output = record.get("model_output") or {}
    raw = output.get("raw")
    if isinstance(raw, str) and "</action>" in raw:
        return raw.strip()
    parts = [f"<think>{output.get('think') or ''}</think>", f"<action>{json.dumps(output.get('action'), ensure_ascii=False)}</action>"]
    if output.get("state_update") is not None:
        parts.append(f"<state_update>{json.dumps(output['state_update'], ensure_ascii=False)}</state_update>")
    return "\n".join(parts)


def problem(record: dict[str, Any]) -> str | None:
    output = record.get("model_output") or {}
    action = (record.get("sandbox_result") or {}).get("action")
    if record.get("error"):
        return "engine_error" if not action else "sandbox_failure"
    if output.get("errors"):
        return "malformed_output"
    if action is not None and not action.get("valid"):
        return "sandbox_failure"
    if reward_labels(record).get("matches_gold") is False:
        return "wrong_result"
    return None


def as_steps(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = []
    for record in records:
        at = float(record.get("created_at") or 0.0)
        tokens = sum(int(c.get("completion_tokens") or 0) for c in record.get("completions") or [])
        steps.append({"step": len(steps) + 1, "type": "error" if problem(record) not in (None, "wrong_result") else "action",
                      "timestamp": at, "token_count": tokens, "tool": "ast-grep"})
        steps.append({"step": len(steps) + 1, "type": "observation", "timestamp": at, "token_count": 0})
        if good_step(record):
            steps.append({"step": len(steps) + 1, "type": "resolution", "timestamp": at, "token_count": 0})
    return steps


def quality_of(records: list[dict[str, Any]]) -> int:
    solved = [index for index, record in enumerate(records) if good_step(record)]
    if solved:
        return max(100 - 20 * solved[0], 60)
    return 40 if any(reward_labels(r).get("verified") for r in records) else 10


def run_rows(session_id: str, source: str, records: list[dict[str, Any]], provenance: dict[str, Any]) -> dict[str, Any]:
    first = records[0]
    steps = as_steps(records)
    stitched = StitchedSession(session_id=session_id, contributor_id=None, metadata={"model_engine": first.get("model")},
                               steps=steps, outcome=None, feedback=[], total_chunks=len({raw.rsplit(":", 1)[0] for raw in provenance["raw_ids"]}))
    points = score(stitched)
    times = [float(r.get("created_at") or 0.0) for r in records]
    numbers = [int(r.get("step") or 0) for r in records]
    quality = quality_of(records)
    solved = any(good_step(r) for r in records)
    problems = [problem(r) for r in records]
    eligible = solved
    return {
        "session_id": session_id, "source": source, "contributor_id": None, "provider": first.get("teacher") or first.get("engine") or source,
        "model_engine": first.get("model"), "agent_role": None, "task_complexity": None, "started_at": min(times), "duration_s": round(max(times) - min(times), 3),
        "total_steps": len(records), "total_tokens": stitched.total_tokens, "total_chunks": stitched.total_chunks, "missing_chunks": [],
        "duplicate_steps": sorted({n for n in numbers if numbers.count(n) > 1}),
        "action_steps": sum(1 for r in records if (r.get("model_output") or {}).get("action")),
        "observation_steps": sum(1 for r in records if (r.get("sandbox_result") or {}).get("action") is not None),
        "error_steps": sum(1 for p in problems if p), "errors_recovered": sum(1 for p in problems if p) if solved else 0,
        "unique_tools": ["ast-grep"], "reported_status": None,
        "outcome": "resolved" if solved else ("unresolved_error" if problems and problems[-1] else "incomplete"),
        "quality": quality, "tier": tier_of(quality), "tier_reason": "verified_in_sandbox" if solved else "not_verified",
        "training_eligible": eligible, "exclusion_reason": None if eligible else UNVERIFIED, "score": points.total_points,
        "score_breakdown": json.dumps(points.breakdown, sort_keys=True), "feedback_signal": None, "provenance": provenance,
    }


def prompt_messages(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The recorded prompt as chat turns without loss: its `messages` (what the teacher and the actor loop write), else
    one user turn holding the prompt and `state_before`. Section 7 of seed 002 leaves the prompt's shape open
    (`"prompt": {...}`), so a record written with the instruction and code as its fields, or as one string, still
    becomes a prompt: a step's completion never reaches sft without the context it answered."""
    prompt = record.get("prompt")
    messages = prompt.get("messages") if isinstance(prompt, dict) else None
    if isinstance(messages, list) and any(isinstance(m, dict) for m in messages):
        return [{"role": str(m.get("role")), "content": str(m.get("content") or ""), "loss": False} for m in messages if isinstance(m, dict)]
    if isinstance(prompt, dict):
        parts = [f"{key}:\n{json_text(value)}" for key, value in prompt.items() if key != "messages" and value not in (None, "", [], {})]
    else:
        parts = [json_text(prompt)] if prompt not in (None, "", [], {}) else []
    state = record.get("state_before")
    if state not in (None, "", [], {}):
        parts.append(f"<state>{json_text(state)}</state>")
    return [{"role": "user", "content": "\n\n".join(parts), "loss": False}] if parts else []


def task_text(record: dict[str, Any]) -> str:
    """The task a run's first record states (its prompt's last turn): part of the run's content for dedup."""
    turns = prompt_messages(record)
    return turns[-1]["content"] if turns else ""


def sft_messages(record: dict[str, Any]) -> list[dict[str, Any]]:
    return [*prompt_messages(record), {"role": "assistant", "content": completion(record), "loss": True}]


def behavior_rows(session_id: str, source: str, records: list[dict[str, Any]], provenance: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for index, record in enumerate(records):
        kind = problem(record)
        if kind is None:
            continue
        later_good = any(good_step(r) for r in records[index + 1 :])
        detail = record.get("error") or "; ".join((record.get("model_output") or {}).get("errors") or []) or \
            json.dumps((record.get("sandbox_result") or {}).get("action") or {}, ensure_ascii=False)
        rows.append({"row_id": f"{session_id}#{int(record.get('step') or 0):05d}#{kind}", "kind": "model_error" if kind != "wrong_result" else "behavior",
                     "behavior": kind, "session_id": session_id, "step": int(record.get("step") or 0), "source": source,
                     "provider": record.get("teacher") or record.get("engine") or source, "model_engine": record.get("model"), "tool": "ast-grep",
                     "content": str(detail)[:2000], "context": completion(record)[:2000], "recovered": later_good, "provenance": provenance})
    return rows
