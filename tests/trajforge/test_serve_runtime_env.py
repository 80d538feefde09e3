"""An application's `runtime_env` in the Serve file, which only Ray Serve's own CLI applies, is said by `trajforge serve`."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import yaml

from trajforge.cli import serve_cmd

REPO = Path(__file__).resolve().parents[2]


def serve_args(config: Path) -> argparse.Namespace:
    return argparse.Namespace(config=config, assignments=[], host=None, port=None, tls_cert=None, tls_key=None, lake=None,
                              apps=None, address=None)


def test_a_runtime_env_trajforge_serve_does_not_apply_is_a_warning_naming_the_application(tmp_path, caplog, monkeypatch):
    """The README gives `runtime_env: {env_vars: {TRAJFORGE__INGEST__NUM_REPLICAS: "2"}}` for `serve run`; the same file
    under `trajforge serve` ran one replica without a word."""
    monkeypatch.delenv("GROOVE_CENTRAL_PORT", raising=False)
    data = yaml.safe_load((REPO / "configs" / "serve.yaml").read_text())
    data["applications"][0]["runtime_env"] = {"env_vars": {"TRAJFORGE__INGEST__NUM_REPLICAS": "2"}}
    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    with caplog.at_level(logging.WARNING, logger="trajforge.cli.serve_cmd"):
        serve_cmd.load(serve_args(config))
    assert [record.getMessage() for record in caplog.records] == [
        f"{config}: the runtime_env of ingest is read by `serve run` and `serve deploy` only, not by `trajforge serve`: give its "
        "TRAJFORGE__ variables to this command (or --set), and other variables to the environment the Ray cluster starts with"]


def test_the_shipped_config_loads_without_it(caplog, monkeypatch):
    monkeypatch.delenv("GROOVE_CENTRAL_PORT", raising=False)
    with caplog.at_level(logging.WARNING, logger="trajforge.cli.serve_cmd"):
        serve_cmd.load(serve_args(None))
    assert caplog.records == []
