"""TrajectoryStitcher (seed 004): one session's envelopes -> one ordered trajectory.

Chunks are ordered by `chunk_sequence` and steps by `step`; missing chunk numbers and steps that
appear twice are flagged (the first copy is kept). Used by the ingest service on SESSION_CLOSE and
by the build pipeline, so both see the same trajectory.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class StitchedSession:
    session_id: str
    contributor_id: str | None
    metadata: dict[str, Any]
    steps: list[dict[str, Any]]
    outcome: dict[str, Any] | None
    feedback: list[dict[str, Any]]
    total_chunks: int
    missing_chunks: list[int] = field(default_factory=list)
    duplicate_steps: list[int] = field(default_factory=list)

    @property
    def total_steps(self) -> int:
        return len(self.steps)

    @property
    def total_tokens(self) -> int:
        return sum(int(step.get("token_count") or 0) for step in self.steps)

    @property
    def unique_tools_used(self) -> list[str]:
        return sorted({step["tool"] for step in self.steps if isinstance(step.get("tool"), str)})

    @property
    def step_type_distribution(self) -> dict[str, int]:
        return dict(Counter(step.get("type") for step in self.steps))

    @property
    def model_engine(self) -> str | None:
        return self.metadata.get("model_engine")


def stitch(session_id: str, envelopes: Iterable[dict[str, Any]]) -> StitchedSession:
    chunks, close, feedback = [], None, []
    for envelope in envelopes:
        kind = envelope.get("type") or "CHUNK"
        if kind == "SESSION_CLOSE":
            close = envelope
        elif kind == "USER_FEEDBACK":
            feedback.append(envelope.get("feedback") or {})
        else:
            chunks.append(envelope)
    chunks.sort(key=lambda chunk: chunk.get("chunk_sequence", 0))
    sequences = [chunk.get("chunk_sequence", 0) for chunk in chunks]
    missing = sorted(set(range(min(sequences), max(sequences) + 1)) - set(sequences)) if sequences else []

    seen: set[int] = set()
    duplicates: list[int] = []
    steps: list[dict[str, Any]] = []
    for chunk in chunks:
        for step in chunk.get("trajectory_log") or []:
            number = step.get("step")
            if number in seen:
                duplicates.append(number)
                continue
            seen.add(number)
            steps.append(step)
    steps.sort(key=lambda step: step.get("step", 0))

    first = chunks[0] if chunks else (close or {})
    metadata = dict(first.get("metadata") or {})
    if close and not metadata:
        metadata = dict(close.get("metadata") or {})
    contributor = first.get("contributor_id") or (close or {}).get("contributor_id")
    return StitchedSession(
        session_id=session_id,
        contributor_id=contributor,
        metadata=metadata,
        steps=steps,
        outcome=(close or {}).get("outcome"),
        feedback=feedback,
        total_chunks=len(chunks),
        missing_chunks=missing,
        duplicate_steps=sorted(duplicates),
    )
