"""Replaying recorded agent sessions (`examples/sessions/*.json`) through the client SDK.

A recorded step carries `t`, seconds since the session started; replay turns it into an absolute
`timestamp` ending now, so recorded sessions pass the protocol's 7-day window whenever they run.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trajforge.client import IngestClient

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "sessions"


@dataclass
class ReplayResult:
    name: str
    session_id: str
    envelopes: int
    steps: int
    points: float | None
    answers: list[dict]


def load_recorded(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def recorded_sessions(folder: Path = EXAMPLES) -> list[Path]:
    return sorted(folder.glob("*.json"))


def _duration(doc: dict[str, Any]) -> float:
    times = [step.get("t", 0.0) for chunk in doc["chunks"] for step in chunk]
    feedback = doc.get("feedback") or {}
    return max(times + [feedback.get("t", 0.0)] or [0.0])


def _absolute(step: dict[str, Any], start: float) -> dict[str, Any]:
    converted = {"step": step["step"], "type": step["type"], "timestamp": round(start + step.get("t", 0.0), 3)}
    converted.update({key: value for key, value in step.items() if key not in ("step", "type", "t")})
    return converted


def replay(client: IngestClient, doc: dict[str, Any], name: str = "", machine: str | None = None, now: float | None = None) -> ReplayResult:
    """Open a session, send its chunks, close it and send its feedback; the answers in order."""
    from trajforge.client import contributor_id_for  # here: reading recordings needs no protocol crypto

    now = time.time() if now is None else now
    start = now - _duration(doc) - 1.0
    session = client.open_session(
        provider=doc["provider"], model=doc["model"], contributor_id=contributor_id_for(doc["contributor"]),
        machine=machine, groove_version=doc.get("groove_version", "0.27.113"),
    )
    metadata = dict(doc.get("metadata") or {})
    answers = []
    steps = 0
    for chunk in doc["chunks"]:
        answers.append(session.send_chunk([_absolute(step, start) for step in chunk], metadata))
        steps += len(chunk)
    close = dict(doc.get("close") or {"status": "SUCCESS"})
    close_answer = session.close(close, metadata)
    answers.append(close_answer)
    feedback = doc.get("feedback")
    if feedback:
        body = {key: value for key, value in feedback.items() if key != "t"}
        body = {"signal": body.pop("signal"), "timestamp": round(start + feedback.get("t", 0.0), 3), **body}
        answers.append(session.send_feedback(body))
    points = ((close_answer or {}).get("score") or {}).get("points")
    return ReplayResult(name, session.session_id, len(answers), steps, points, answers)
