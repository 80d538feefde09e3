"""`trajforge serve`'s port: one something already listens on is refused before a Ray of its own starts; `--port 0` is refused."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time

from trajforge.cli import serve_cmd


def test_a_taken_port_is_refused_in_seconds_before_any_ray_starts(tmp_path):
    """The refusal came only after the command had started Ray and Serve's controller: some 45 s on 2 cores."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "trajforge", "serve", "--port", str(port), "--apps", "ingest", "--lake", str(tmp_path / "lake")],
                              capture_output=True, text=True, env={**os.environ, "RAY_ADDRESS": "local"}, timeout=300)
        took = time.monotonic() - started
    assert done.returncode == 2, done.stderr
    assert f"trajforge serve: 127.0.0.1:{port} is already in use" in done.stderr and "pass another --port" in done.stderr
    assert "Ray:" not in done.stdout and took < 20, (took, done.stdout)


def test_port_0_is_refused_naming_the_flag_not_read_as_no_port(monkeypatch):
    """`--port 0` served on the config's 8000 (0 is falsy), printing that URL as if asked for."""
    import pytest

    from trajforge.errors import ConfigError

    monkeypatch.setenv("GROOVE_CENTRAL_PORT", "8443")
    args = argparse.Namespace(config=None, assignments=[], host=None, port=0, tls_cert=None, tls_key=None, lake=None, apps=None,
                              address=None)
    with pytest.raises(ConfigError, match=r"http_options\.port \(set by --port\): Input should be greater than or equal to 1 \(got 0\)"):
        serve_cmd.load(args)
