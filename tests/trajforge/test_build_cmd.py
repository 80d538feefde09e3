"""`trajforge build`'s options as run_build receives them (trajforge/cli/build_cmd.py)."""

from __future__ import annotations

import pytest

from trajforge.cli import main


@pytest.mark.parametrize(("argv", "environment", "expected"), [
    (["--org", ""], {}, None),                         # an empty --org is no filter, as an empty TRAINING_ORG_ID is
    ([], {"TRAINING_ORG_ID": ""}, None),
    ([], {"TRAINING_ORG_ID": "acme"}, "acme"),
    (["--org", "acme"], {"TRAINING_ORG_ID": "globex"}, "acme"),
])
def test_the_org_a_build_filters_by(monkeypatch, tmp_path, argv, environment, expected):
    import pipelines.build

    monkeypatch.delenv("TRAINING_ORG_ID", raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    seen = {}

    def fake_run_build(settings, *, full, org, progress):
        seen["org"] = org
        return {"build_id": "b"}

    monkeypatch.setattr(pipelines.build, "run_build", fake_run_build)
    (tmp_path / "raw").mkdir()
    assert main.main(["build", "--lake", str(tmp_path), "--no-embed", "--json", *argv]) == 0
    assert seen["org"] == expected
