"""The build's provenance rows redact every free text an agent sends with an action (its intent, and the repository,
branch and paths it names: a repo URL may carry a password), as every other table's text is; only `intent` was."""

from __future__ import annotations

import json

import pyarrow.parquet as pq

from pipelines.build.provenance_rows import parse_file
from pipelines.build.settings import BuildSettings

PASSWORD = "Zq8r-secret-Hm4p"
KEY = "AKIA4KXZ7QF3N2WD8PLM"


def test_an_actions_repo_branch_and_files_are_redacted_and_counted(tmp_path):
    event = {"event_type": "agent_action", "actor_type": "agent", "actor_id": "cursor-v1", "tool": "refactor", "intent": "rotate keys",
             "model": "gpt-4", "files_written": [f"config/{KEY}.json", "src/auth.py"], "timestamp": "2026-11-30T12:00:00Z",
             "repo": f"https://bob:{PASSWORD}@github.com/acme/app.git", "branch": f"fix/{KEY}", "commit": "9fceb02d0ae598e95dc970b74767f19372d61af8"}
    relative = "raw/provenance/customer=acme/date=2026-11-30/w1.jsonl"
    (tmp_path / relative).parent.mkdir(parents=True)
    (tmp_path / relative).write_text(json.dumps({"event_id": "e1", "event_type": "agent_action", "customer_id": "acme", "token_id": "t",
                                                 "received_at": 1_796_000_000.0, "client": "test", "event": event}) + "\n")
    result = parse_file(str(tmp_path), relative, str(tmp_path / "staged.parquet"), [], None, BuildSettings().model_dump_json())
    row = pq.read_table(tmp_path / "staged.parquet").to_pylist()[0]
    assert PASSWORD not in json.dumps(row) and KEY not in json.dumps(row)
    assert row["repo"].endswith("@github.com/acme/app.git") and row["files_written"][1] == "src/auth.py" and row["branch"].startswith("fix/")
    assert sum(result["redactions"].values()) == 3 and row["commit"] == event["commit"]
