"""`latest:ORG` names an organisation's newest build through `curated/LATEST.org=<folder-safe org>`. Org ids that
differ only in characters a folder name cannot hold (`日本` and `中国` are both `__`) share that marker, so the other
organisation's build must never be taken for this one's (a learner would train on the other's data)."""

from __future__ import annotations

import json

import pytest

from trajforge.errors import TrajforgeError
from trajforge.lake import Lake


def _build(lake: Lake, build_id: str, org: str) -> None:
    folder = lake.build_dir(build_id)
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"build_id": build_id, "org": org, "files": []}))
    lake.latest_marker(org).write_text(build_id + "\n")


def test_latest_of_an_org_never_names_another_orgs_build_that_shares_its_marker(tmp_path):
    lake = Lake.at(tmp_path)
    _build(lake, "b-japan", "日本")
    assert lake.resolve_build("latest:日本") == lake.build_dir("b-japan")
    _build(lake, "b-china", "中国")  # the same marker, LATEST.org=__
    assert lake.resolve_build("latest:中国") == lake.build_dir("b-china")
    with pytest.raises(TrajforgeError, match=r"names build b-china, of org '中国', not of '日本'.*by its build id"):
        lake.resolve_build("latest:日本")
