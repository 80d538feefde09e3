"""A dataset of several data files, or one large JSON-lines file cut at line starts, normalized one file or piece per Ray
task on the driver's node (the session's Ray, as `trajforge datasets` connects to one): the same shards, byte for byte,
as in one process, the counts summed, record locations still naming their lines."""

from __future__ import annotations

import gzip
import logging

import pytest
from datasets_lake import SAMPLES

from pipelines.datasets.normalize import normalize_source
from pipelines.datasets.readers import CorruptRecord
from pipelines.datasets.settings import DatasetSpec

pytestmark = pytest.mark.usefixtures("serve_url")  # the session's one local Ray


def shards(folder):
    return {path.name: path.read_bytes() for path in sorted(folder.glob("part-*.jsonl"))}


def test_several_files_go_to_ray_tasks_and_give_the_shards_one_process_gives(tmp_path, caplog, monkeypatch):
    lines = gzip.decompress((SAMPLES / "agentpack" / "train" / "sample-00000.jsonl.gz").read_bytes()).splitlines(keepends=True)
    release = tmp_path / "train"
    release.mkdir()
    for index in range(3):  # AgentPack's train/ shards: every record in each, so each has convertible and not
        (release / f"shard-{index:05d}.jsonl.gz").write_bytes(gzip.compress(b"".join(lines)))
    spec = DatasetSpec.model_validate({"source": str(release), "adapter": "agentpack", "license": "Apache-2.0", "version": "1"})

    with caplog.at_level(logging.INFO, logger="pipelines.datasets.normalize"):
        in_ray = normalize_source("agentpack", spec, release, tmp_path / "ray", per_shard=1, progress=False, cpus=0.1)
    assert "normalizing 3 files or pieces in Ray tasks on this node" in caplog.text
    monkeypatch.setattr("ray.is_initialized", lambda: False)
    alone = normalize_source("agentpack", spec, release, tmp_path / "alone", per_shard=1, progress=False)

    assert in_ray == alone and in_ray["records"] == 3 * 2 and in_ray["shards"] == 6
    assert in_ray["not_converted"] == {"multi_file_patch": 3, "multi_hunk_patch": 3}
    assert shards(tmp_path / "ray") == shards(tmp_path / "alone") and list(shards(tmp_path / "ray"))[-1] == "part-00005.jsonl"
    assert not (tmp_path / "ray" / ".parts").exists()


def test_a_large_json_lines_file_is_cut_at_line_starts_and_normalized_in_pieces(tmp_path, caplog):
    from pipelines.datasets.readers import jsonl_ranges

    lines = (SAMPLES / "commitpackft" / "data.jsonl").read_bytes().splitlines(keepends=True)
    source = tmp_path / "data.jsonl"
    source.write_bytes(b"".join(lines[:3]) + b"\n" + b"".join(lines[3:]))  # a blank line: numbering goes on across it
    pieces = jsonl_ranges(source, 700)
    assert pieces[0][0] == 0 and pieces[-1][1] == source.stat().st_size and len(pieces) >= 3
    assert all(end == start for (_, end, _), (start, _, _) in zip(pieces, pieces[1:]))  # no gap, no overlap
    assert all(source.read_bytes()[start - 1 : start] == b"\n" for start, _, _ in pieces[1:])  # each starts a line
    spec = DatasetSpec.model_validate({"source": str(source), "adapter": "commitpackft", "license": "MIT", "version": "1"})

    with caplog.at_level(logging.INFO, logger="pipelines.datasets.normalize"):
        cut = normalize_source("commitpackft", spec, source, tmp_path / "cut", per_shard=100, progress=False, cpus=0.1, split_bytes=700)
    assert f"normalizing {len(pieces)} files or pieces in Ray tasks" in caplog.text
    whole = normalize_source("commitpackft", spec, source, tmp_path / "whole", per_shard=100, progress=False)
    assert cut["records"] == whole["records"] == 7 and cut["shards"] == len(pieces) and whole["shards"] == 1
    rows = lambda folder: [line for path in sorted(folder.glob("part-*.jsonl")) for line in path.read_text().splitlines()]  # noqa: E731
    assert rows(tmp_path / "cut") == rows(tmp_path / "whole")  # the same records in the same order

    damaged = tmp_path / "damaged.jsonl"
    damaged.write_bytes(b"".join(lines[:5]) + b"{not json\n" + b"".join(lines[5:]))
    with pytest.raises(CorruptRecord, match=r"damaged\.jsonl:6: not a JSON record"):  # its line number, in whichever piece
        normalize_source("commitpackft", spec, damaged, tmp_path / "bad", per_shard=100, progress=False, cpus=0.1, split_bytes=700)


def test_a_node_without_the_cpus_for_the_tasks_normalizes_in_process_and_says_so(tmp_path, caplog):
    lines = (SAMPLES / "commitpackft" / "data.jsonl").read_bytes()
    source = tmp_path / "data.jsonl"
    source.write_bytes(lines)
    spec = DatasetSpec.model_validate({"source": str(source), "adapter": "commitpackft", "license": "MIT", "version": "1"})
    with caplog.at_level(logging.INFO, logger="pipelines.datasets.normalize"):  # more CPUs a task than this Ray has: never schedulable
        counts = normalize_source("commitpackft", spec, source, tmp_path / "out", per_shard=100, progress=False, cpus=64, split_bytes=700)
    assert counts["records"] == 7 and "under datasets.cpus_per_task=64" in caplog.text and "in Ray tasks" not in caplog.text
