"""`trajforge serve` on a port something already listens on is refused before it starts a Ray of its own."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time


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
