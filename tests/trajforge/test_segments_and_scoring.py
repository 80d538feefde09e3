"""Raw segment framing, the stitcher and the scorer."""

from __future__ import annotations

import numpy as np
import pytest

from trajforge.errors import LakeCorruption
from trajforge.raw_segments import SegmentWriter, encode_frame, read_frame, scan, try_lock
from trajforge.scoring import score
from trajforge.stitch import stitch


def test_frames_round_trip_and_a_torn_tail_stops_the_scan(tmp_path):
    path = tmp_path / "a.seg"
    writer = SegmentWriter(path)
    offsets = writer.append([encode_frame({"n": i}, f"body {i}".encode()) for i in range(3)])
    writer.sync()
    with open(path, "ab") as handle:
        handle.write(encode_frame({"n": 3}, b"torn")[:-2])
    frames, valid_end = scan(path)
    assert [frame.header["n"] for frame in frames] == [0, 1, 2]
    assert valid_end == writer.size < path.stat().st_size
    assert read_frame(path, offsets[1], frames[1].length).body == b"body 1"
    writer.close()


def test_a_live_writer_holds_the_lock(tmp_path):
    path = tmp_path / "b.seg"
    writer = SegmentWriter(path)
    assert try_lock(path) is None
    with pytest.raises(LakeCorruption, match="locked"):
        SegmentWriter(path)
    writer.close()
    fd = try_lock(path)
    assert fd is not None


def test_damage_in_the_middle_raises(tmp_path):
    path = tmp_path / "c.seg"
    writer = SegmentWriter(path)
    writer.append([encode_frame({"n": i}, b"x" * 50) for i in range(3)])
    writer.close()
    data = bytearray(path.read_bytes())
    data[20] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(LakeCorruption, match="not a torn tail"):
        scan(path)


def _step(number, kind, tool=None, tokens=10):
    return {"step": number, "type": kind, "timestamp": 1.0 + number, "content": kind, "token_count": tokens, **({"tool": tool} if tool else {})}


def test_stitch_orders_chunks_and_steps_and_flags_gaps_and_duplicates():
    envelopes = [
        {"type": "USER_FEEDBACK", "feedback": {"signal": "accepted"}},
        {"chunk_sequence": 2, "contributor_id": "c", "metadata": {"model_engine": "o3"}, "trajectory_log": [_step(5, "resolution"), _step(4, "observation")]},
        {"chunk_sequence": 0, "contributor_id": "c", "metadata": {"model_engine": "gpt-5.5"}, "trajectory_log": [_step(2, "action", "shell"), _step(1, "thought")]},
        {"chunk_sequence": 3, "contributor_id": "c", "metadata": {}, "trajectory_log": [_step(5, "resolution")]},
        {"type": "SESSION_CLOSE", "outcome": {"status": "SUCCESS"}},
    ]
    stitched = stitch("s", envelopes)
    assert [step["step"] for step in stitched.steps] == [1, 2, 4, 5, 5]  # both copies of step 5, as the specification concatenates
    assert stitched.missing_chunks == [1] and stitched.duplicate_steps == [5]
    assert stitched.metadata["model_engine"] == "gpt-5.5"  # from the first chunk
    assert stitched.outcome == {"status": "SUCCESS"} and stitched.feedback == [{"signal": "accepted"}]
    assert stitched.unique_tools_used == ["shell"] and stitched.total_tokens == 50


def test_score_follows_the_specifications_formula():
    kinds = ["thought", "action", "observation", "coordination", "error", "correction", "error", "action", "correction", "resolution"]
    stitched = stitch("s", [{"chunk_sequence": 0, "contributor_id": "c", "metadata": {"model_engine": "gemini-2.5-pro", "task_complexity": "heavy"},
                             "trajectory_log": [_step(i + 1, kind) for i, kind in enumerate(kinds)]}])
    result = score(stitched)
    # base 10 * 3 = 30; corrections min(2, 3.0)*10 = 20; coordination min(1, 2.0)*5 = 5; recovered min(2, 2)*3 = 6;
    # heavy: +10 -> subtotal 71; resolution and 10 steps -> +floor(7.1) = 7 -> 78
    assert result.total_points == 78.0
    assert result.breakdown["subtotal"] == 71 and result.breakdown["quality_bonus"] == 7


def test_score_ignores_unknown_models_and_caps_bonuses():
    stitched = stitch("s", [{"chunk_sequence": 0, "contributor_id": "c", "metadata": {"model_engine": "my-own-model"},
                             "trajectory_log": [_step(i + 1, "correction") for i in range(4)]}])
    # 4 * 1 + min(4, 1.2) * 10 = 16; no resolution -> no quality bonus
    assert score(stitched).total_points == 16.0


def _naive_stitch_order(chunks):
    """The specification's stitcher, written the obvious way: chunks by sequence (stable), every step concatenated,
    sorted by step number (stable)."""
    steps = [step for chunk in sorted(chunks, key=lambda chunk: chunk["chunk_sequence"]) for step in chunk["trajectory_log"]]
    return sorted(steps, key=lambda step: step["step"])


def test_stitch_keeps_every_copy_in_chunk_order_whatever_the_arrival_order():
    import random

    rng = random.Random(11)
    kinds = ["thought", "action", "observation", "error", "correction", "resolution", "coordination"]
    for _ in range(200):
        chunks = [{"chunk_sequence": rng.randrange(4), "metadata": {"model_engine": "o3"},
                   "trajectory_log": [{**_step(rng.randrange(1, 12), rng.choice(kinds)), "copy": (n, k)} for k in range(rng.randrange(0, 6))]}
                  for n in range(rng.randrange(1, 5))]
        stitched = stitch("s", chunks)
        expected = _naive_stitch_order(chunks)
        assert [(step["step"], step["copy"]) for step in stitched.steps] == [(step["step"], step["copy"]) for step in expected]
        assert len(stitched.duplicate_steps) == len(expected) - len({step["step"] for step in expected})


def test_scoring_many_sessions_at_once_equals_scoring_each():
    import random


    from trajforge.scoring import kind_codes, score_columns, score_of

    rng = random.Random(5)
    kinds = ["thought", "action", "observation", "error", "correction", "resolution", "coordination", None]
    sessions = []
    for number in range(300):
        steps = [_step(n, rng.choice(kinds)) for n in range(1, rng.randrange(0, 40))]
        metadata = {"model_engine": rng.choice(["o3", "o4-mini", "unknown-model", None]), "task_complexity": rng.choice(["heavy", "light", None])}
        sessions.append(stitch(f"s{number}", [{"chunk_sequence": 0, "metadata": metadata, "trajectory_log": steps}]))
    groups = np.array([index for index, session in enumerate(sessions) for _ in session.steps], dtype=np.int64)
    codes = kind_codes([step["type"] for session in sessions for step in session.steps])
    heavy = np.array([session.metadata.get("task_complexity") == "heavy" for session in sessions])
    columns = score_columns(groups, codes, [session.model_engine for session in sessions], heavy)
    singles = [score(session) for session in sessions]
    assert [score_of(columns, index, session.model_engine) for index, session in enumerate(sessions)] == singles
    assert len({single.total_points for single in singles}) > 20  # the sessions differ, so the comparison means something


def test_the_metadata_is_the_first_chunks_with_the_close_filling_gaps():
    envelopes = [
        {"chunk_sequence": 1, "metadata": {"model_engine": "o3"}, "trajectory_log": [_step(3, "thought")]},
        {"chunk_sequence": 0, "metadata": {"provider": "codex", "model_engine": None}, "trajectory_log": [_step(1, "thought")]},
        {"type": "SESSION_CLOSE", "metadata": {"model_engine": "o4-mini", "task_complexity": "heavy", "provider": "other"}},
    ]
    stitched = stitch("s", envelopes)
    assert stitched.metadata == {"provider": "codex", "model_engine": "o4-mini", "task_complexity": "heavy"}
    with pytest.raises(ValueError, match="step numbers must be integers"):
        stitch("s", [{"chunk_sequence": 0, "trajectory_log": [{"step": "2", "type": "thought"}]}])


@pytest.mark.parametrize("high", [4, 1 << 40])  # packed into one int64, and too wide to pack
def test_the_stitch_sort_orders_as_lexsort_does_ties_included(high):
    from trajforge.stitch import _sort_order

    rng = np.random.default_rng(high % 97)
    keys = [rng.integers(-high, high, 5000) for _ in range(4)]
    assert np.array_equal(_sort_order(keys), np.lexsort(keys[::-1]))
