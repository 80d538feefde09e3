"""`trajforge provenance`: the provenance queries of a running ingest service (the session's shared one), as text or JSON."""

from __future__ import annotations

import json
import uuid

import pytest

from trajforge.cli.main import main


def test_by_commit_file_and_search_print_the_actions_and_their_outcomes(http, serve_url, capsys, monkeypatch):
    token = http.post("/v1/tokens", json={"customer_id": f"cli-{uuid.uuid4().hex[:8]}", "name": "CLI"}).json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    action = {"event_type": "agent_action", "actor_type": "agent", "actor_id": "cursor-v1", "tool": "refactor", "intent": "refactor auth module",
              "model": "gpt-4", "files_written": ["src/auth.ts"], "repo": "my-project", "branch": "main", "commit": "abc123"}
    event_id = http.post("/v1/events", json=action, headers=headers).json()["event_id"]
    http.post("/v1/events", json={"event_type": "outcome", "original_event_id": event_id, "status": "accepted", "linked_commit": "def456"}, headers=headers)
    monkeypatch.setenv("TRAJFORGE_TOKEN", token)

    assert main(["provenance", "--commit", "def456", "--url", serve_url]) == 0
    out = capsys.readouterr().out
    assert "cursor-v1 refactor (gpt-4)  my-project@main abc123  [accepted in def456]" in out and "wrote:  src/auth.ts" in out
    assert main(["provenance", "--file", "src/auth.ts", "--repo", "my-project", "--url", serve_url, "--json"]) == 0
    assert [e["event_id"] for e in json.loads(capsys.readouterr().out)["events"]] == [event_id]
    assert main(["provenance", "--search", "--actor", "nobody", "--url", serve_url]) == 0
    assert capsys.readouterr().out.strip() == "no provenance events"


def test_a_missing_or_refused_token_and_no_service_are_one_line_errors(serve_url, capsys, monkeypatch):
    monkeypatch.delenv("TRAJFORGE_TOKEN", raising=False)
    assert main(["provenance", "--commit", "abc123", "--url", serve_url]) == 2
    assert "no API token: set TRAJFORGE_TOKEN" in capsys.readouterr().err
    assert main(["provenance", "--commit", "abc123", "--url", serve_url, "--token", "sk_nope"]) == 2
    assert "answered 401" in capsys.readouterr().err
    assert main(["provenance", "--commit", "abc123", "--url", "http://127.0.0.1:9", "--token", "sk_nope"]) == 2
    assert "no answer from http://127.0.0.1:9/v1/provenance/by-commit/abc123" in capsys.readouterr().err


@pytest.mark.parametrize("asked", [["--commit", ""], ["--file", ""], ["--file", "  "]])
@pytest.mark.parametrize("where", [["--url", "http://127.0.0.1:9", "--token", "sk_nope"], ["--build", "latest"]])
def test_an_empty_commit_or_file_is_a_usage_error_not_a_search_of_everything(asked, where, capsys, tmp_path):
    with pytest.raises(SystemExit) as exited:  # it was read as no value: the service was searched, a build matched nothing
        main(["provenance", *asked, *where, "--lake", str(tmp_path)])
    assert exited.value.code == 2
    assert f"argument {asked[0]}: must not be empty" in capsys.readouterr().err
