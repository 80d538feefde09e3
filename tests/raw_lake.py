"""Reading a lake's raw envelope segments back, for the durability tests."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from trajforge.raw_segments import iter_frames


def stored_hmacs(lake: Path) -> Counter:
    """How many times each envelope HMAC appears in the raw segments."""
    counts: Counter = Counter()
    for segment in sorted((lake / "raw" / "envelopes").rglob("*.seg")):
        for frame in iter_frames(segment):
            counts[frame.header["hmac"]] += 1
    return counts
