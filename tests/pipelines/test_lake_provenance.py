"""Provenance asked of a curated build (`trajforge provenance --build`): the agent actions of a commit (short SHAs as
git abbreviates them, outcomes' linked commits), of a file in a repository, or a search, newest first in the API's
shape, each customer's or one's; and the training rows the build labelled with them. A hand-made build folder holds
the `provenance` table and labelled sft rows; no Ray needed."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.build.provenance_labels import Labeller, same_repo
from pipelines.lake_provenance import find_actions, labelled_rows
from trajforge.cli.main import main
from trajforge.contracts.curated import PROVENANCE_ACTIONS
from trajforge.errors import ConfigError

LANDED = "3f2a9c108cf13833b822e951fb107a90b2e8c356"
DAY = 1_796_000_000.0


def action(event_id: str, commit: str, *, at: float, customer: str = "acme", repo: str = "github.com/acme/app", files=("src/auth.py",),
           actor: str = "cursor-v1", tool: str = "refactor", outcomes=(), found: bool = True) -> dict:
    folded = [{"event_id": f"{event_id}-o{n}", "status": status, "linked_commit": linked, "received_at": at + 60 * (n + 1),
               "raw_id": f"raw/provenance/x.jsonl:{n}"} for n, (status, linked) in enumerate(outcomes)]
    return {"event_id": event_id, "customer_id": customer, "action_found": found, "actor_type": "agent", "actor_id": actor, "tool": tool,
            "intent": f"{tool} {event_id}", "model": "gpt-4", "files_written": list(files), "repo": repo, "branch": "main", "commit": commit,
            "diff_hash": None, "timestamp": at, "received_at": at, "token_id": "tok1", "raw_id": "raw/provenance/x.jsonl:0",
            "outcome": folded[-1]["status"] if folded else None, "linked_commit": folded[-1]["linked_commit"] if folded else None,
            "outcome_at": folded[-1]["received_at"] if folded else None, "outcome_count": len(folded), "outcomes": folded}


@pytest.fixture
def build(tmp_path) -> Path:
    folder = tmp_path / "lake" / "curated" / "20261207T000000Z-0001"
    rows = [action("a1", "9fceb02d0ae598e95dc970b74767f19372d61af8", at=DAY, outcomes=[("accepted", LANDED)]),
            action("a2", "abc1234", at=DAY + 10, files=("src/auth.py", "src/db.py"), tool="fix"),
            action("a3", "def5678", at=DAY + 20, customer="globex", repo="github.com/globex/app", actor="claude-code"),
            action("gone", None, at=DAY, found=False)]
    for table, data in {"provenance": pa.Table.from_pylist(rows, schema=PROVENANCE_ACTIONS),
                        "sft": pa.table({"example_id": ["s1", "s2", "s3"],
                                         "provenance": [{"agent_action_ids": ["a1"]}, {"agent_action_ids": []}, {"agent_action_ids": ["a1", "a2"]}]})}.items():
        (folder / table).mkdir(parents=True)
        pq.write_table(data, folder / table / "part-00000.parquet")
    (folder / "manifest.json").write_text(json.dumps({"build_id": folder.name}))
    (tmp_path / "lake" / "curated" / "LATEST").write_text(folder.name + "\n")
    return folder


def test_a_commit_finds_the_actions_at_it_or_linked_to_it_by_a_short_sha(build):
    assert [event["event_id"] for event in find_actions(build, commit="3f2a9c1")] == ["a1"]  # an outcome's linked commit, abbreviated
    assert [event["event_id"] for event in find_actions(build, commit="9FCEB02D")] == ["a1"]
    [shown] = find_actions(build, commit=LANDED)
    assert shown["status"] == "accepted" and shown["outcomes"][0]["linked_commit"] == LANDED
    assert shown["timestamp"] == "2026-11-30T00:53:20.000Z" and shown["event_type"] == "agent_action"
    assert find_actions(build, commit="0000000") == []


def test_a_file_and_a_search_newest_first_each_customer_or_one(build):
    assert [event["event_id"] for event in find_actions(build, file="src/auth.py")] == ["a3", "a2", "a1"]
    assert [event["event_id"] for event in find_actions(build, file="src/auth.py", repo="acme/app")] == ["a2", "a1"]
    assert [event["event_id"] for event in find_actions(build, file="src/auth.py", customer="globex")] == ["a3"]
    assert [event["event_id"] for event in find_actions(build, actor="cursor-v1", tool="fix")] == ["a2"]
    assert [event["event_id"] for event in find_actions(build, since="2026-11-30T00:53:25Z", limit=1)] == ["a3"]
    assert [event["event_id"] for event in find_actions(build, since="2026-11-30T00:53:25")] == ["a3", "a2"]  # no zone: UTC
    with pytest.raises(ConfigError, match="--since 'yesterday' is no ISO 8601 time"):
        find_actions(build, since="yesterday")


def test_the_rows_labelled_with_the_actions(build):
    assert labelled_rows(build, ["a1"])["sft"] == {"rows": 2, "sample": ["s1", "s3"]}
    assert labelled_rows(build, ["a2", "a3"])["sft"] == {"rows": 1, "sample": ["s3"]}
    assert labelled_rows(build, ["a1"])["trajectories"] == {"rows": 0, "sample": []}  # a table the build wrote no part for


def test_the_command_asks_the_build_without_a_service_or_token(build, capsys, monkeypatch):
    monkeypatch.delenv("TRAJFORGE_TOKEN", raising=False)
    lake = str(build.parent.parent)
    assert main(["provenance", "--commit", "3f2a9c1", "--build", "latest", "--lake", lake]) == 0
    out = capsys.readouterr().out
    assert "cursor-v1 refactor (gpt-4)  github.com/acme/app@main 9fceb02d" in out and f"[accepted in {LANDED}]" in out
    assert "rows of build 20261207T000000Z-0001 labelled with these actions: sft 2 (s1, s3), trajectories 0, behavior 0" in out
    assert main(["provenance", "--file", "src/db.py", "--build", str(build), "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert [event["event_id"] for event in answer["events"]] == ["a2"] and answer["training_rows"]["sft"]["rows"] == 1
    assert main(["provenance", "--search", "--since", "yesterday", "--build", str(build)]) == 2
    assert "--since 'yesterday' is no ISO 8601 time" in capsys.readouterr().err


def test_a_query_reads_only_the_actions_that_can_match(tmp_path, monkeypatch):
    # each query read the whole provenance table into Python dicts, and a commit indexed every action: 2-4 s and 470 MB
    # per query at 100,000 actions; DuckDB now keeps the rows that can match, and a search stops once `limit` match
    import pipelines.lake_provenance as lake_provenance

    folder = tmp_path / "curated" / "b1"
    (folder / "provenance").mkdir(parents=True)
    fillers = [action(f"f{n:05d}", f"{(n + 1) * 7919:040x}", at=DAY + 100 + n, files=("src/other.py",), tool="filler") for n in range(3000)]
    rows = [action("a1", "9fceb02d0ae598e95dc970b74767f19372d61af8", at=DAY, outcomes=[("accepted", LANDED)]), *fillers]
    pq.write_table(pa.Table.from_pylist(rows, schema=PROVENANCE_ACTIONS), folder / "provenance" / "part-00000.parquet")
    indexed, compared = [], []
    monkeypatch.setattr(lake_provenance, "Labeller", lambda table: indexed.append(table.num_rows) or Labeller(table))
    monkeypatch.setattr(lake_provenance, "same_repo", lambda a, b: compared.append(a) or same_repo(a, b))
    assert [event["event_id"] for event in find_actions(folder, commit="3f2a9c1")] == ["a1"] and indexed == [1]
    assert [event["event_id"] for event in find_actions(folder, file="src/auth.py", repo="acme/app")] == ["a1"] and len(compared) == 1
    assert [event["event_id"] for event in find_actions(folder, repo="acme/app", limit=2)] == ["f02999", "f02998"]
    assert len(compared) <= 1 + 1024  # one batch read, of 3,001 actions
