"""`trajforge serve` on a cluster whose terminal is closed while it still deploys: what it began to deploy is removed,
as after it is up (SIGHUP's default action ended the process there and left its applications running on the cluster)."""

from __future__ import annotations

import signal

import pytest
from test_serve_on_cluster import _config, _read_until, _serve


@pytest.mark.slow
def test_sighup_while_deploying_removes_the_applications_it_began_to_deploy(serve_url, tmp_path):
    from ray import serve

    port = int(serve_url.rsplit(":", 1)[1])
    process = _serve(_config(tmp_path, port, "hup-deploying"))
    try:
        _read_until(process, "deploying hup-deploying")
        process.send_signal(signal.SIGHUP)  # the terminal closed before the command said it serves
        assert process.wait(timeout=90) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert "hup-deploying" not in serve.status().applications
