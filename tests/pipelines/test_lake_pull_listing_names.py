"""A sync listing written by someone else (a shared bucket): names no raw lake file can have are refused one by one,
counted and warned of, and the pull brings the rest; never a traceback, never the whole pull stopped."""

from __future__ import annotations

import json

import pytest
from test_lake_pull import synced  # noqa: F401 (a fixture)

from pipelines.lake_pull import pull_lake
from pipelines.lake_sync import LISTING
from trajforge.lake import Lake


@pytest.mark.parametrize("name", ["raw/events/a\x00b.jsonl", "raw//trajectories", "raw/trajectories//x.jsonl",
                                  "raw/" + "x" * 256, "raw/trajectories/"])
def test_a_listed_name_no_file_can_have_is_refused_and_the_rest_pulled(tmp_path, synced, name):  # noqa: F811
    _, uri = synced
    listing = json.loads((tmp_path / "shared" / LISTING).read_text())
    listing["files"][name] = {"bytes": 3, "sha256": "0" * 64}
    (tmp_path / "shared" / LISTING).write_text(json.dumps(listing))
    result = pull_lake(Lake.at(tmp_path / "here"), uri, progress=False)
    assert (result["refused"], result["downloaded"]) == (1, 4)
