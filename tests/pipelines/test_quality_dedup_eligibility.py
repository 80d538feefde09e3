"""Which copy of a near-duplicate pair a build keeps: one that can become sft rows beats one that cannot, and a
training-eligible field session of a tier `sft.tiers` leaves out (TIER_C by default) makes none: it was kept over a
resolved TIER_A copy for its higher score, and the pair gave no sft row at all."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.build.dedup import find_duplicates
from pipelines.build.job import _candidates

SIGNATURE = bytes(range(256)) * 2  # 128 uint32 values: two copies of one text


def test_a_tier_a_copy_is_kept_over_a_better_scored_tier_c_one(tmp_path):
    (tmp_path / "trajectories").mkdir()
    pq.write_table(pa.table({"session_id": ["failed-opus", "resolved-mini"], "_origin": ["b1", "b1"], "content_hash": ["h1", "h2"],
                             "score": [50, 22], "minhash": pa.array([SIGNATURE, SIGNATURE], pa.binary()), "training_eligible": [True, True],
                             "source": ["ingest", "ingest"], "tier": ["TIER_C", "TIER_A"]}), tmp_path / "trajectories" / "b1-000.parquet")
    candidates = _candidates(tmp_path, {"failed-opus": "b1", "resolved-mini": "b1"}, ["TIER_A", "TIER_B"])
    assert {c.session_id: c.eligible for c in candidates} == {"failed-opus": False, "resolved-mini": True}
    [dropped] = find_duplicates(candidates, 0.8, 128)
    assert (dropped.kept, dropped.dropped) == ("resolved-mini", "failed-opus")
    with_c = _candidates(tmp_path, {"failed-opus": "b1", "resolved-mini": "b1"}, ["TIER_A", "TIER_B", "TIER_C"])
    assert find_duplicates(with_c, 0.8, 128)[0].kept == "failed-opus"  # both can train: the better score stays
