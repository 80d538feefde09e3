"""A dataset of several data files normalized one file per Ray task on the driver's node (the session's Ray, as
`trajforge datasets` connects to one): the same shards, byte for byte, as in one process, the counts summed."""

from __future__ import annotations

import gzip
import logging

import pytest
from datasets_lake import SAMPLES

from pipelines.datasets.normalize import normalize_source
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
    assert "normalizing 3 files in Ray tasks on this node" in caplog.text
    monkeypatch.setattr("ray.is_initialized", lambda: False)
    alone = normalize_source("agentpack", spec, release, tmp_path / "alone", per_shard=1, progress=False)

    assert in_ray == alone and in_ray["records"] == 3 * 2 and in_ray["shards"] == 6
    assert in_ray["not_converted"] == {"multi_file_patch": 3, "multi_hunk_patch": 3}
    assert shards(tmp_path / "ray") == shards(tmp_path / "alone") and list(shards(tmp_path / "ray"))[-1] == "part-00005.jsonl"
    assert not (tmp_path / "ray" / ".parts").exists()
