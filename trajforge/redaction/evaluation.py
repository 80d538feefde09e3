"""Precision and recall of a detector on a labelled set, from exact span matches.

A labelled line is `{"text": ..., "spans": [{"kind": "email", "value": "alice@example.com"}, ...]}`,
listing every substring that must be replaced. A finding is a true positive when a labelled span
of the same kind and the same value is still unclaimed in that text; a finding with the right
value but another kind counts as a false positive of its kind and a miss of the labelled one.
Used by the tests (thresholds) and by `compare` (choosing between detectors).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

Detector = Callable[[str], Iterable[tuple[str, str]]]
"""text -> (kind, value) of each finding."""


@dataclass
class Score:
    true_positives: Counter = field(default_factory=Counter)
    false_positives: Counter = field(default_factory=Counter)
    false_negatives: Counter = field(default_factory=Counter)
    mistakes: list[tuple[str, str, str]] = field(default_factory=list)
    """(FP or FN, kind, value) of each error, for debugging a rule."""

    def precision(self, kind: str | None = None) -> float:
        tp, fp = self._sum(self.true_positives, kind), self._sum(self.false_positives, kind)
        return tp / (tp + fp) if tp + fp else 1.0

    def recall(self, kind: str | None = None) -> float:
        tp, fn = self._sum(self.true_positives, kind), self._sum(self.false_negatives, kind)
        return tp / (tp + fn) if tp + fn else 1.0

    def kinds(self) -> list[str]:
        return sorted(set(self.true_positives) | set(self.false_positives) | set(self.false_negatives))

    def table(self) -> str:
        lines = [f"{'kind':18} {'labelled':>8} {'found':>6} {'precision':>9} {'recall':>7}"]
        for kind in [*self.kinds(), None]:
            labelled = self._sum(self.true_positives, kind) + self._sum(self.false_negatives, kind)
            found = self._sum(self.true_positives, kind) + self._sum(self.false_positives, kind)
            lines.append(f"{kind or 'ALL':18} {labelled:8d} {found:6d} {self.precision(kind):9.3f} {self.recall(kind):7.3f}")
        return "\n".join(lines)

    @staticmethod
    def _sum(counter: Counter, kind: str | None) -> int:
        return sum(counter.values()) if kind is None else counter[kind]


def load_labelled(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def score(detector: Detector, rows: list[dict], kinds: Iterable[str] | None = None, partial: bool = False) -> Score:
    """Score `detector` on `rows`; with `kinds`, only those kinds count (labels and findings alike).

    `partial`: a finding that is part of a labelled value counts as finding it. That credits
    detectors that report a fragment (detect-secrets reports `ghp` for a GitHub token, the header
    line for a PEM block) with detection, though the fragment alone could not redact the secret.
    """
    keep = set(kinds) if kinds is not None else None
    result = Score()
    for row in rows:
        expected = Counter((span["kind"], span["value"]) for span in row["spans"] if keep is None or span["kind"] in keep)
        for kind, value in detector(row["text"]):
            if keep is not None and kind not in keep:
                continue
            if partial and expected[(kind, value)] == 0:
                value = next((labelled for (k, labelled), left in expected.items() if k == kind and left and value in labelled), value)
            if expected[(kind, value)] > 0:
                expected[(kind, value)] -= 1
                result.true_positives[kind] += 1
            else:
                result.false_positives[kind] += 1
                result.mistakes.append(("FP", kind, value))
        for (kind, value), missed in expected.items():
            result.false_negatives[kind] += missed
            result.mistakes += [("FN", kind, value)] * missed
    return result
