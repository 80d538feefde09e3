"""A field session (stitched, redacted) as curated rows: its trajectory row, its sft row, its behaviour rows.

The chat an sft row holds, step by step (consecutive steps of one role share a message):

| step type | role | content |
| --- | --- | --- |
| instruction, clarification, approval | user | the content |
| thought | assistant | `<think>` content `</think>` |
| action, edit | assistant | `<tool_call>{"name": tool, "arguments": {...}}</tool_call>` (the content when no tool) |
| correction, resolution, coordination sent | assistant | the content |
| coordination received (`← partner: ...`, or no tool and no `→`) | user | the content: a teammate's words, not the model's |
| observation | tool | the content, long outputs cut to their first 50 and last 20 lines (the specification's `OBSERVATION_TRUNCATE_*`) |
| error | tool | `Error: ` the content |

Loss is on the assistant messages only.
"""

from __future__ import annotations

import json
from typing import Any

from pipelines.build.derive import Derived
from trajforge.stitch import StitchedSession

USER_STEPS = {"instruction", "clarification", "approval"}
TOOL_STEPS = {"observation", "error"}
OBSERVATION_TRUNCATE_HEAD = 50
OBSERVATION_TRUNCATE_TAIL = 20
BEHAVIOR_TEXT_CHARS = 2000


def truncate_observation(text: str) -> str:
    lines = text.split("\n")
    if len(lines) <= OBSERVATION_TRUNCATE_HEAD + OBSERVATION_TRUNCATE_TAIL:
        return text
    cut = len(lines) - OBSERVATION_TRUNCATE_HEAD - OBSERVATION_TRUNCATE_TAIL
    return "\n".join([*lines[:OBSERVATION_TRUNCATE_HEAD], f"[... {cut} lines cut ...]", *lines[-OBSERVATION_TRUNCATE_TAIL:]])


def received(step: dict[str, Any], content: str) -> bool:
    """A coordination step that is a teammate's message to this agent (the agent's own go through a tool, or read `→ partner: ...`)."""
    text = content.lstrip()
    return step.get("type") == "coordination" and (text.startswith("←") or (not step.get("tool") and not text.startswith("→")))


def step_message(step: dict[str, Any]) -> tuple[str, str]:
    kind = step.get("type")
    content = step.get("content") if isinstance(step.get("content"), str) else ""
    if kind in USER_STEPS or received(step, content):
        return "user", content
    if kind == "observation":
        return "tool", truncate_observation(content)
    if kind == "error":
        return "tool", f"Error: {content}"
    if kind == "thought":
        return "assistant", f"<think>\n{content}\n</think>"
    if kind in ("action", "edit") and step.get("tool"):
        call = {"name": step["tool"], "arguments": step.get("arguments") or {}}
        return "assistant", f"<tool_call>\n{json.dumps(call, ensure_ascii=False)}\n</tool_call>"
    return "assistant", content


def chat(steps: list[dict[str, Any]], system_prompt: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": system_prompt, "loss": False}]
    for step in steps:
        role, content = step_message(step)
        if not content:
            continue
        if messages[-1]["role"] == role and role != "system":
            messages[-1]["content"] += "\n\n" + content
        else:
            messages.append({"role": role, "content": content, "loss": role == "assistant"})
    return messages


def embed_text(session: StitchedSession) -> str:
    """What the session is about, for its embedding: the agent's role, then its first instructions and thoughts."""
    parts = [str(session.metadata.get("agent_role") or "")]
    parts += [step["content"] for step in session.steps if step.get("type") in ("instruction", "thought") and isinstance(step.get("content"), str)][:3]
    return "\n".join(part for part in parts if part)[:512]


WORK_STEPS = {"action", "edit", "observation", "error"}


def dedup_parts(session: StitchedSession, work_only: bool = False) -> list[str]:
    """Step texts for the content hash (every step), or for near-duplicate shingles (`work_only`: what the
    agent did and saw, so the same work narrated in other words is still a near-duplicate)."""
    return [f"{step.get('type')} {step.get('tool') or ''} {step.get('content') or ''} {json.dumps(step.get('arguments') or {}, sort_keys=True)}"
            for step in session.steps if not work_only or step.get("type") in WORK_STEPS]


def trajectory_row(session: StitchedSession, derived: Derived, score, provenance: dict[str, Any]) -> dict[str, Any]:
    metadata = session.metadata
    return {
        "session_id": session.session_id, "source": "ingest", "contributor_id": session.contributor_id,
        "provider": metadata.get("provider"), "model_engine": metadata.get("model_engine"), "agent_role": metadata.get("agent_role"),
        "task_complexity": metadata.get("task_complexity"), "started_at": derived.started_at, "duration_s": derived.duration_s,
        "total_steps": session.total_steps, "total_tokens": session.total_tokens, "total_chunks": session.total_chunks,
        "missing_chunks": session.missing_chunks, "duplicate_steps": session.duplicate_steps, "action_steps": derived.action_steps,
        "observation_steps": derived.observation_steps, "error_steps": derived.error_steps, "errors_recovered": derived.errors_recovered,
        "unique_tools": session.unique_tools_used, "reported_status": (session.outcome or {}).get("status"), "outcome": derived.outcome,
        "quality": derived.quality, "tier": derived.tier, "tier_reason": derived.tier_reason, "training_eligible": derived.training_eligible,
        "exclusion_reason": derived.exclusion_reason, "score": score.total_points, "score_breakdown": json.dumps(score.breakdown, sort_keys=True),
        "feedback_signal": derived.feedback_signal, "provenance": provenance,
    }


def behavior_rows(session: StitchedSession, provenance: dict[str, Any]) -> list[dict[str, Any]]:
    """Model errors (recovered or not), corrections, coordination, user interventions, negative feedback."""
    rows = []
    steps = session.steps
    first = steps[0].get("step") if steps else None
    common = {"session_id": session.session_id, "source": "ingest", "provider": session.metadata.get("provider"),
              "model_engine": session.metadata.get("model_engine"), "provenance": provenance}

    def add(kind: str, behavior: str, index: int | None, recovered: bool | None, step: dict[str, Any] | None = None, content: str = "") -> None:
        step = step or {}
        previous = steps[index - 1] if index else None
        number = step.get("step")
        rows.append({**common, "row_id": f"{session.session_id}#{number if number is not None else -1:05d}#{behavior}", "kind": kind,
                     "behavior": behavior, "step": number, "tool": step.get("tool"),
                     "content": (content or str(step.get("content") or ""))[:BEHAVIOR_TEXT_CHARS],
                     "context": str((previous or {}).get("content") or "")[:BEHAVIOR_TEXT_CHARS], "recovered": recovered})

    for index, step in enumerate(steps):
        kind = step.get("type")
        if kind == "error":
            later = [other.get("type") for other in steps[index + 1 :]]
            recovered = next((t in ("correction", "resolution") for t in later if t in ("correction", "resolution", "error")), False)
            add("model_error", "error_recovered" if recovered else "error_unrecovered", index, recovered, step)
        elif kind in ("correction", "coordination"):
            add("behavior", kind, index, None, step)
        elif kind == "clarification" or (kind == "instruction" and step.get("step") != first):
            add("behavior", "user_intervention", index, None, step)
    for item in session.feedback:
        if isinstance(item, dict) and item.get("signal") in ("rejected", "modified", "iterated"):
            target = next((i for i, step in enumerate(steps) if step.get("step") == item.get("target_step")), None)
            add("behavior", f"feedback_{item['signal']}", target, None, steps[target] if target is not None else None,
                content=str(item.get("context") or item.get("delta_summary") or item["signal"]))
    unique = {row["row_id"]: row for row in rows}
    return list(unique.values())
