"""Raw segment framing, the stitcher and the scorer."""

from __future__ import annotations

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
    assert [step["step"] for step in stitched.steps] == [1, 2, 4, 5]
    assert stitched.missing_chunks == [1] and stitched.duplicate_steps == [5]
    assert stitched.metadata["model_engine"] == "gpt-5.5"  # from the first chunk
    assert stitched.outcome == {"status": "SUCCESS"} and stitched.feedback == [{"signal": "accepted"}]
    assert stitched.unique_tools_used == ["shell"] and stitched.total_tokens == 40


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
