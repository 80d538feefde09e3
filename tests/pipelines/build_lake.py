"""A raw lake for the build's tests, written through the real ingest service (and the trajectory store).

`fill_phase_one` sends the recorded example sessions, an exact duplicate of one of them under a
cheaper model, one crafted session per training exclusion reason, an eligible crafted session, a
session with out-of-order, missing and overlapping chunks, and one left open; it also writes
teacher step records (a run solved at its second step, a run never verified, a torn line).
`fill_phase_two` adds sessions for the incremental build.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

from trajforge.client import IngestClient, contributor_id_for
from trajforge.replay import load_recorded, recorded_sessions, replay

PLANTED = ["AKIA4KXZ7QF3N2WD8PLM", "ghp_R7tXk2Lm9QvB4nWc8YdZ1pHs6JfGa3Ue0KoT", "hunter2", "marcus.ode@acme-payments.io",
           "eyJzdWIiOiJzdmMtZGVwbG95LWJvdCIsInNjb3BlIjoicGF5bWVudHM6YWRtaW4iLCJleHAiOjE3NTAwMDAwMDB9", "54.183.22.91"]
WORDS = [f"{a}{b}" for a in ("zor", "mip", "tal", "quen", "brak", "vel", "dun", "oss", "pry", "gath") for b in ("ax", "el", "ion", "um", "ist", "ode", "ark", "ine")]
EXCLUSIONS = {
    "too_few_steps": (["instruction", "action", "observation"], 200, 5.0),
    "no_actions": (["instruction", "thought", "observation", "thought", "observation", "resolution"], 200, 5.0),
    "no_observations": (["instruction", "action", "thought", "action", "action", "resolution"], 200, 5.0),
    "insufficient_tokens": (["instruction", "action", "observation", "action", "observation", "resolution"], 20, 5.0),
    "too_short": (["instruction", "action", "observation", "action", "observation", "resolution"], 200, 0.5),
}
ELIGIBLE = (["instruction", "action", "observation", "action", "observation", "resolution"], 200, 5.0)


def crafted_steps(name: str, kinds: list[str], tokens: int, spacing: float, start: float, first: int = 1) -> list[dict[str, Any]]:
    rng = random.Random(name)
    steps = []
    for offset, kind in enumerate(kinds):
        text = f"{name} {kind} " + " ".join(rng.choice(WORDS) for _ in range(40))
        step = {"step": first + offset, "type": kind, "timestamp": round(start + offset * spacing, 3), "content": text, "token_count": tokens}
        if kind == "action":
            step.update(tool="command_execution", arguments={"command": f"run-{name}-{offset} --check"})
        steps.append(step)
    return steps


def send_crafted(client: IngestClient, name: str, kinds: list[str], tokens: int, spacing: float, model: str = "gpt-5.5", contributor: str = "frank") -> str:
    session = client.open_session(provider="codex", model=model, contributor_id=contributor_id_for(contributor))
    start = time.time() - 600
    session.send_chunk(crafted_steps(name, kinds, tokens, spacing, start), {"agent_role": "backend", "task_complexity": "light"})
    session.close({"status": "SUCCESS"})
    return session.session_id


def send_chunky(client: IngestClient) -> str:
    """Chunks sent as 2 then 0 (1 never arrives); chunk 2 repeats step 3 of chunk 0."""
    session = client.open_session(provider="codex", model="o3", contributor_id=contributor_id_for("grace"))
    start = time.time() - 900
    kinds = ["instruction", "action", "observation", "action", "observation", "action", "observation", "resolution"]
    steps = crafted_steps("chunky", kinds, 150, 10.0, start)
    session.chunk_sequence = 2
    session.send_chunk([steps[2], *steps[5:]])
    session.chunk_sequence = 0
    session.send_chunk(steps[:4])
    session.close({"status": "SUCCESS"})
    return session.session_id


def send_open(client: IngestClient) -> str:
    session = client.open_session(provider="codex", model="o3", contributor_id=contributor_id_for("grace"))
    session.send_chunk(crafted_steps("still-open", ["instruction", "action", "observation"], 100, 3.0, time.time() - 60))
    return session.session_id


def teacher_record(task: str, run: str, step: int, *, valid: bool, gold: bool | None, final: bool, errors: list[str] | None = None) -> dict[str, Any]:
    action = {"pattern": "print($A)", "rewrite": "log($A)", "language": "python"}
    return {
        "task_id": task, "step": step, "run_id": run, "teacher": "oracle", "model": "oracle", "engine": "oracle", "temperature": 0.7, "seed": step,
        "prompt": {"messages": [{"role": "system", "content": "You refactor code with ast-grep."},
                                {"role": "user", "content": f"<state>{{}}</state>\nTask {task}: replace print with log. Ask ops@example.org"}]},
        "state_before": {}, "state_after": {},
        "model_output": {"think": "use a rewrite", "action": None if errors else action, "state_update": {"notes": ["tried"]}, "errors": errors or [],
                         "raw": "" if errors else f"<think>use a rewrite</think>\n<action>{json.dumps(action)}</action><state_update>{{}}</state_update>"},
        "sandbox_result": {"action": None if errors else {"valid": valid, "files_changed": ["snippet.py"] if valid else []}, "tests": None, "verified": valid},
        "reward": {"verified": valid, "matches_gold": gold, "tests_pass": None}, "final": final, "error": None,
        "completions": [{"completion_tokens": 40, "prompt_tokens": 120}], "created_at": time.time() - 100 + step,
    }


def write_teacher_records(lake: Path) -> None:
    folder = lake / "raw" / "trajectories"
    folder.mkdir(parents=True, exist_ok=True)
    records = [
        teacher_record("task-solved", "run-1", 1, valid=False, gold=None, final=False),
        teacher_record("task-solved", "run-1", 2, valid=True, gold=True, final=True),
        teacher_record("task-failed", "run-2", 1, valid=False, gold=None, final=True, errors=["no <action> tag"]),
    ]
    text = "".join(json.dumps(record) + "\n" for record in records) + "{this line is not json\n"
    (folder / "teacher0-test.jsonl").write_text(text)


def fill_phase_one(base_url: str, lake: Path) -> tuple[dict[str, str], dict[str, float]]:
    """Session ids by name, and the points the ingest service credited each replayed session."""
    ids: dict[str, str] = {}
    points: dict[str, float] = {}
    with IngestClient(base_url, max_retries=0) as client:
        for path in recorded_sessions():
            result = replay(client, load_recorded(path), path.stem)
            ids[path.stem], points[path.stem] = result.session_id, result.points
        cheaper = load_recorded(next(p for p in recorded_sessions() if p.stem.startswith("02_")))
        cheaper.update(model="o4-mini", contributor="erin")
        ids["02_copy"] = replay(client, cheaper, "02_copy").session_id
        for reason, (kinds, tokens, spacing) in EXCLUSIONS.items():
            ids[reason] = send_crafted(client, reason, kinds, tokens, spacing)
        ids["eligible"] = send_crafted(client, "eligible", *ELIGIBLE)
        ids["chunky"] = send_chunky(client)
        ids["open"] = send_open(client)
    write_teacher_records(lake)
    return ids, points


def fill_phase_two(base_url: str) -> list[str]:
    with IngestClient(base_url, max_retries=0) as client:
        return [send_crafted(client, f"later-{index}", *ELIGIBLE, contributor="heidi") for index in range(3)]
