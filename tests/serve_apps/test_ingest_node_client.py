"""Interoperability: a Node client written from the specification (JSON.stringify + Node crypto) is accepted."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "fixtures" / "groove_client.mjs"


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_a_node_client_signing_with_json_stringify_is_accepted(serve_url):
    result = subprocess.run(["node", str(SCRIPT), serve_url], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["open"] == 200
    assert [r["status"] for r in report["results"]] == [200, 200, 200, 200], report
    assert report["results"][-1]["body"]["score"]["points"] > 0
